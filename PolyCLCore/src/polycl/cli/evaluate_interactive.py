"""``polycl evaluate-interactive IMAGE LABEL``: the simulated user (robot) on one labelled CT.

Two protocols (see :mod:`polycl.interact.robot`):

* ``--protocol clicks`` (default): clicks from nothing. Prints Dice after each click and, as its last
  line, ``NoC90=<n> NoC95=<n> dice@1=<d> [dice@5=<d>] seconds_per_click=<s>`` (a target never
  reached reads ``>N``; ``dice@5`` only when five clicks were made).
* ``--protocol box``: the CVPR 2025 interactive challenge's: the box, then 5 corrective clicks.
  Prints DSC and NSD after each interaction and, last,
  ``DSC_AUC=<a> NSD_AUC=<a> final_DSC=<d> final_NSD=<d> box_DSC=<d> seconds_per_interaction=<s>``.
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
    p.add_argument("--protocol", default="clicks", choices=["clicks", "box"],
                   help="clicks: clicks from nothing (NoC90/NoC95); box: the CVPR 2025 challenge's box + 5 clicks")
    p.add_argument("--max-clicks", type=int, default=None,
                   help="clicks at most (clicks: default 20, the NoC cap; box: corrective clicks, default 5)")
    p.add_argument("--engine", default="auto", choices=["auto", "sam2", "chain"], help="propagation engine")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.set_defaults(func=run)


def run(args) -> int:
    from polycl.errors import InputError
    from polycl.interact import InteractiveSession
    from polycl.interact.robot import BOX_PROTOCOL_CLICKS, run_box_protocol, run_robot, write_csv
    from polycl.io import label_on_image_grid, parse_label_spec, read_label, read_volume, select_labels

    if args.max_clicks is not None and args.max_clicks < 1:
        raise InputError("--max-clicks must be at least 1")
    values = parse_label_spec(args.target)
    image = read_volume(args.image)
    label = label_on_image_grid(read_label(args.label), image)
    gt = select_labels(label.array, values)
    if not gt.any():
        raise InputError(f"label {args.target} ({values}) is not present in {args.label} on the image's grid")
    session = InteractiveSession(image, device=args.device, engine=args.engine)
    if args.protocol == "box":
        box = run_box_protocol(session, gt, clicks=args.max_clicks or BOX_PROTOCOL_CLICKS)
        for i, st in enumerate(box.steps):
            where = f" at (z, y, x) = ({st['z']:.0f}, {st['y']:.0f}, {st['x']:.0f})" if "z" in st else ""
            print(f"step {i + 1} {st['step']:7s}{where}: DSC {st['dsc']:.4f} NSD {st['nsd']:.4f}  ({st['seconds']:.2f} s)")
        print(box.summary())
        return 0
    result = run_robot(session, gt, max_clicks=args.max_clicks or 20)
    for c in result.clicks:
        print(f"click {c['click']:2d} {c['kind']:7s} at (z, y, x) = ({c['z']:.0f}, {c['y']:.0f}, {c['x']:.0f}): "
              f"Dice {c['dice']:.4f}  ({c['seconds']:.2f} s)")
    if args.csv:
        write_csv(result, args.csv)
        print(f"wrote {args.csv}")
    print(result.summary())
    return 0
