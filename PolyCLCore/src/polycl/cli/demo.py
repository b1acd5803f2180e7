"""``polycl demo``: segment the example CT with the bundled model; mask, overlay PNG and Dice."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="segment a real example CT with the bundled liver model")
    p.add_argument("-o", "--output", default="demo-output", help="folder for the mask and overlay (default demo-output)")
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="auto")
    from polycl.segment import MODES

    p.add_argument("--mode", choices=MODES, default=None,
                   help="segment mode (default: the pipeline; see polycl segment --help)")
    p.set_defaults(func=run)


def run(args) -> int:
    from polycl.demo import run_demo

    run_demo(args.output, args.model, args.device, args.mode)
    return 0
