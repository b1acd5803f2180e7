"""``polycl evaluate-interactive IMAGE LABEL``: the simulated user (robot) on one labelled CT.

Prints Dice after each click and, as its last line, the summary
``NoC90=<n> NoC95=<n> dice@1=<d> dice@5=<d> seconds_per_click=<s>`` (see :mod:`polycl.interact.robot`).
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("evaluate-interactive",
                       help="simulate a user's clicks against a reference label (NoC90 / NoC95)")
    p.add_argument("image", help="CT image (NIfTI/NRRD/... file or DICOM folder)")
    p.add_argument("label", help="reference label map (resampled onto the image in physical space if needed)")
    p.add_argument("--label", dest="target", default="liver",
                   help="organ: liver, kidney, spleen, or label value(s) such as 5 or 2,3 (default liver)")
    p.add_argument("--csv", default=None, help="write the Dice-per-click curve to this CSV file")
    p.add_argument("--max-clicks", type=int, default=20, help="clicks at most (default 20; the NoC cap)")
    p.add_argument("--engine", default="auto", choices=["auto", "sam2", "chain"], help="propagation engine")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=run)


def run(args) -> int:
    from polycl.errors import InputError
    from polycl.interact import InteractiveSession
    from polycl.interact.robot import run_robot, write_csv
    from polycl.io import label_on_image_grid, parse_label_spec, read_label, read_volume, select_labels

    if args.max_clicks < 1:
        raise InputError("--max-clicks must be at least 1")
    values = parse_label_spec(args.target)
    image = read_volume(args.image)
    label = label_on_image_grid(read_label(args.label), image)
    gt = select_labels(label.array, values)
    if not gt.any():
        raise InputError(f"label {args.target} ({values}) is not present in {args.label} on the image's grid")
    session = InteractiveSession(image, device=args.device, engine=args.engine)
    result = run_robot(session, gt, max_clicks=args.max_clicks)
    for c in result.clicks:
        print(f"click {c['click']:2d} {c['kind']:7s} at (z, y, x) = ({c['z']:.0f}, {c['y']:.0f}, {c['x']:.0f}): "
              f"Dice {c['dice']:.4f}  ({c['seconds']:.2f} s)")
    if args.csv:
        write_csv(result, args.csv)
        print(f"wrote {args.csv}")
    print(result.summary())
    return 0
