"""Robot-user study of interactive segmentation (issue 18): NoC90 / NoC95 per scan and organ.

Runs :func:`polycl.interact.robot.run_robot` (the standard simulated user: first click at the
organ's centre, then at the centre of the largest error; local re-propagation after each click)
on every labelled CT of the shared data folder, for the liver and the kidneys:

* ``example_ct`` with ``example_seg_fast_force_split`` (3 mm, 112 slices);
* ``example_ct_dicom`` with ``example_seg_dicom`` (resampled onto the image in physical space:
  its label file is y-flipped; no kidneys on these 20 slices);
* ``example_ct_sm`` with its own ``example_seg_fast`` (30 slices; its origin agrees only with
  its own label files).

Writes ``docs/interactive_robot.csv`` (Dice after each click), ``docs/interactive_robot.png``
(Dice versus clicks) and the table of the "Interactive (robot user)" section of
``docs/evaluation.md`` (between its markers). Usage, from the repository root::

    .venv/bin/python PolyCLCore/scripts/interactive_study.py [--data ../shared/data] [--max-clicks 20]
"""

from __future__ import annotations

import argparse
import csv
import io
import platform
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
START, END = "<!-- interactive-robot:start -->", "<!-- interactive-robot:end -->"
CASES = [  # scan, image, label file, organs
    ("example_ct", "totalsegmentator/example_ct.nii.gz", "totalsegmentator/example_seg_fast_force_split.nii.gz",
     ("liver", "kidney")),
    ("example_ct_dicom", "totalsegmentator/example_ct_dicom", "totalsegmentator/example_seg_dicom.nii.gz", ("liver",)),
    ("example_ct_sm", "totalsegmentator/example_ct_sm.nii.gz", "totalsegmentator/example_seg_fast.nii.gz",
     ("liver", "kidney")),
]


def run_case(data: Path, image: str, label: str, organs, max_clicks: int, engine: str, device: str) -> list:
    from polycl.interact import InteractiveSession
    from polycl.interact.robot import run_robot
    from polycl.io import label_on_image_grid, read_label, read_volume, select_labels
    from polycl.sam import SliceSegmenter

    vol = read_volume(data / image)
    lab = label_on_image_grid(read_label(data / label), vol)
    seg = SliceSegmenter(vol, device=device, cache_size=min(vol.shape[0], 256))  # shared by the organs
    out = []
    for organ in organs:
        gt = select_labels(lab.array, organ)
        if not gt.any():
            continue
        result = run_robot(InteractiveSession(vol, engine=engine, segmenter=seg), gt, max_clicks=max_clicks)
        print(f"  {organ}: {result.summary()}", flush=True)
        out.append((organ, result))
    return out


def table(results) -> str:
    lines = ["| scan | organ | NoC90 | NoC95 | Dice@1 | Dice@3 | Dice@5 | clicks made | s / click |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for scan, organ, r in results:
        lines.append(f"| {scan} | {organ} | {r.noc(0.90)} | {r.noc(0.95)} | {r.dice_at(1):.3f} | {r.dice_at(3):.3f} | "
                     f"{r.dice_at(5):.3f} | {len(r.dice)} | {r.seconds_per_click:.1f} |")
    return "\n".join(lines)


def plot(results, path: Path, max_clicks: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for scan, organ, r in results:
        ax.plot(range(1, max_clicks + 1), r.curve(), marker="o", ms=3, label=f"{scan} {organ}")
    ax.axhline(0.90, color="grey", ls="--", lw=0.8)
    ax.axhline(0.95, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("clicks")
    ax.set_ylabel("3D Dice")
    ax.set_ylim(0, 1)
    ax.set_title("Robot user: Dice after each click (LiteMedSAM, chain engine, CPU)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_docs(results, max_clicks: int, seconds_note: str) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["scan", "organ", *[f"dice@{n}" for n in range(1, max_clicks + 1)], "NoC90", "NoC95",
                "seconds_per_click"])
    for scan, organ, r in results:
        w.writerow([scan, organ, *[f"{d:.4f}" for d in r.curve()], r.noc(0.90), r.noc(0.95),
                    f"{r.seconds_per_click:.2f}"])
    (DOCS / "interactive_robot.csv").write_text(buf.getvalue())
    plot(results, DOCS / "interactive_robot.png", max_clicks)
    body = (f"{START}\n{table(results)}\n\n{seconds_note}\n\n![Dice versus clicks](interactive_robot.png)\n\n"
            f"Per-click curves: [interactive_robot.csv](interactive_robot.csv). {END}")
    doc = DOCS / "evaluation.md"
    text = doc.read_text()
    if START in text and END in text:
        text = text[:text.index(START)] + body + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Interactive (robot user)\n\n" + body + "\n"
    doc.write_text(text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    p.add_argument("--max-clicks", type=int, default=20)
    p.add_argument("--engine", default="chain")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cases", default=",".join(c[0] for c in CASES), help="comma-separated scan names")
    p.add_argument("--no-docs", action="store_true", help="print only; do not write the docs")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    wanted = set(args.cases.split(","))
    results = []
    for scan, image, label, organs in CASES:
        if scan not in wanted:
            continue
        print(scan, flush=True)
        for organ, r in run_case(args.data, image, label, organs, args.max_clicks, args.engine, args.device):
            results.append((scan, organ, r))
    print(table(results))
    note = (f"Seconds per click: slice answer plus local re-propagation, the first click including the fill "
            f"(embedding every slice the organ reaches); {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} torch threads, machine shared with other jobs while measured.")
    if not args.no_docs:
        write_docs(results, args.max_clicks, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
