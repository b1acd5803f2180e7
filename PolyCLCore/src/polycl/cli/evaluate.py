"""``polycl evaluate PRED GT``: Dice, Hausdorff, HD95 (mm) and volume difference; folders give a CSV."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score predicted masks against reference labels")
    p.add_argument("pred", help="predicted mask file, or a folder of them")
    p.add_argument("gt", help="reference label file, or a folder of them (matched by case name)")
    p.add_argument("--label", default=None, help="reference label value(s) or target: 5, 2,3, liver, kidney (default: nonzero)")
    p.add_argument("-o", "--output", default="metrics.csv", help="folder mode: CSV to write (default metrics.csv)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from polycl.evaluate import evaluate_files, evaluate_folders, summarise

    if Path(args.pred).is_dir() and Path(args.gt).is_dir():
        rows = evaluate_folders(args.pred, args.gt, args.output, args.label)
        for r in rows:
            print(f"{r['case']}: " + (r["error"] or f"Dice {r['dice']:.4f}  HD95 {r['hd95_mm']:.1f} mm"))
        for key in ("dice", "hd95_mm", "hausdorff_mm", "volume_diff_pct"):
            print(summarise(rows, key))
        print(f"wrote {args.output}")
        return 1 if any(r["error"] for r in rows) else 0
    s = evaluate_files(args.pred, args.gt, args.label)
    print(f"Dice:              {s.dice:.4f}")
    print(f"Hausdorff:         {s.hausdorff_mm:.2f} mm")
    print(f"HD95:              {s.hd95_mm:.2f} mm")
    print(f"volume pred / ref: {s.pred_ml:.1f} / {s.ref_ml:.1f} ml ({s.volume_diff_ml:+.1f} ml, {s.volume_diff_pct:+.1f} %)")
    return 0
