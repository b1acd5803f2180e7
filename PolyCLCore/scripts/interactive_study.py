"""Interaction study: clicks, the challenge's box protocol and Segment, per scan and organ.

Scans (every labelled CT of the shared data folder, read in place):

* ``validation``: the clinical validation scan (3D-IRCADb-01 patient 1: contrast-enhanced,
  512 x 512 x 129 at 0.57 x 0.57 x 1.6 mm) with its expert liver, kidney and spleen masks. Its
  licence allows measuring only: nothing made from it is bundled (this script writes numbers);
* ``example_ct@clinical``: ``example_ct`` resampled to the usual clinical grid (512 x 512 at
  0.72 mm, 1.5 mm slices; B-spline for the CT, nearest neighbour for its TotalSegmentator label,
  whose 3 mm steps stay: a ceiling near 0.9-0.95 Dice on the kidneys);
* ``example_ct``: the 3 mm original (122 x 101 pixels per slice);
* ``example_ct_dicom``: a 20-slice DICOM series of another patient (512 x 512 at 0.98 mm, 2 mm
  slices; liver and spleen, TotalSegmentator label resampled onto it in physical space).

Per organ (liver, left and right kidney, spleen; each kidney its own reference):

* clicks from nothing (:func:`polycl.interact.robot.run_robot`, at most ``--max-clicks``);
* the CVPR 2025 challenge's box + 5 clicks (:func:`polycl.interact.robot.run_box_protocol`);
* Segment, default options: ``polycl-liver`` for the liver, ``polycl-kidney`` for the kidneys
  (both kidneys in one run, scored per kidney by the predicted components touching each),
  ``--target spleen`` (atlas location, no network) for the spleen; with the SAM embeddings it took.

One :class:`~polycl.sam.SliceSegmenter` per scan is shared by the click runs (each slice is
embedded once for them); Segment runs make their own (their embedding counts are Segment's own).
Writes ``docs/interactive_study.csv`` (every step), ``docs/interactive_study.png`` (Dice per click and per
box-protocol step) and the table between the markers of ``docs/evaluation.md`` ("Interaction and
Segment on clinical CT"). Usage, from the repository root (about 30 minutes on 2 cores)::

    .venv/bin/python PolyCLCore/scripts/interactive_study.py [--data ../shared/data] [--scans validation,...]
"""

from __future__ import annotations

import argparse
import csv
import io
import platform
import sys
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[1] / "docs"
START, END = "<!-- interactive-study:start -->", "<!-- interactive-study:end -->"
ORGANS = ("liver", "kidney_left", "kidney_right", "spleen")
IRCADB_FILES = {"liver": "liver", "kidney_left": "leftkidney", "kidney_right": "rightkidney", "spleen": "spleen"}
TS_LABELS = {"liver": 5, "kidney_left": 3, "kidney_right": 2, "spleen": 1}


def validation_scan(data: Path):
    from polycl.io import label_on_image_grid, read_label, read_volume

    folder = data / "ircadb" / "patient01"
    vol = read_volume(folder / "ct.nii.gz")
    return vol, {o: label_on_image_grid(read_label(folder / f"{f}.nii.gz"), vol).array > 0
                 for o, f in IRCADB_FILES.items()}


def example_ct(data: Path, clinical: bool):
    import SimpleITK as sitk

    from polycl.io import label_on_image_grid, read_label, read_volume
    from polycl.volume import Volume

    ts = data / "totalsegmentator"
    vol = read_volume(ts / "example_ct.nii.gz")
    lab = label_on_image_grid(read_label(ts / "example_seg_fast_force_split.nii.gz"), vol)
    if clinical:
        image = vol.to_sitk()
        size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
        extent = size * spacing
        px = float(max(extent[:2])) / 512
        new_spacing = (px, px, 1.5)
        new_size = [512, 512, int(extent[2] / 1.5)]
        direction = np.array(image.GetDirection()).reshape(3, 3)
        shift = [(extent[a] - new_size[a] * new_spacing[a]) / 2 + (new_spacing[a] - spacing[a]) / 2 for a in range(3)]
        origin = tuple(np.array(image.GetOrigin()) + direction @ np.array(shift))
        ct = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), new_size, sitk.Transform(), sitk.sitkBSpline, origin,
                           new_spacing, image.GetDirection(), -1024.0, sitk.sitkInt16)
        lb = sitk.Resample(lab.to_sitk(), ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        vol, lab = Volume.from_sitk(ct), Volume.from_sitk(lb)
    return vol, {o: lab.array == v for o, v in TS_LABELS.items()}


def example_ct_dicom(data: Path):
    from polycl.io import label_on_image_grid, read_label, read_volume

    ts = data / "totalsegmentator"
    vol = read_volume(ts / "example_ct_dicom")
    lab = label_on_image_grid(read_label(ts / "example_seg_dicom.nii.gz"), vol)
    return vol, {o: lab.array == v for o, v in TS_LABELS.items()}


SCANS = {"validation": validation_scan,
         "example_ct@clinical": lambda d: example_ct(d, True),
         "example_ct": lambda d: example_ct(d, False),
         "example_ct_dicom": example_ct_dicom}


def interactive(vol, gts, max_clicks: int) -> list[dict]:
    from polycl.interact import InteractiveSession
    from polycl.interact.robot import run_box_protocol, run_robot
    from polycl.sam import SliceSegmenter

    seg = SliceSegmenter(vol, device="cpu", cache_size=vol.shape[0])
    rows = []
    for organ in ORGANS:
        if not gts[organ].any():
            continue
        clicks = run_robot(InteractiveSession(vol, engine="chain", segmenter=seg), gts[organ], max_clicks=max_clicks)
        box = run_box_protocol(InteractiveSession(vol, engine="chain", segmenter=seg), gts[organ])
        print(f"  {organ}: clicks {clicks.summary()} | box {box.summary()}", flush=True)
        rows.append({"organ": organ, "clicks": clicks, "box": box})
    return rows


def _dice(a, b) -> float:
    from polycl.masks import dice

    return float(dice(a, b))


def segment_rows(vol, gts) -> dict:
    from scipy import ndimage

    from polycl import segment
    from polycl.atlas.targets import AtlasTarget
    from polycl.inference import load_model

    out = {}
    runs = [("liver", load_model("polycl-liver", "cpu")), ("kidney", load_model("polycl-kidney", "cpu")),
            ("spleen", AtlasTarget("spleen"))]
    for what, model in runs:
        if not any(gt.any() for organ, gt in gts.items() if organ.startswith(what)):
            continue
        t0 = time.perf_counter()
        r = segment.run(vol, model, segment.SegmentOptions(engine="chain", device="cpu"))
        seconds = time.perf_counter() - t0
        pred = r.mask > 0
        if what == "kidney":
            lab, _ = ndimage.label(pred, structure=np.ones((3, 3, 3)))
            for organ in ("kidney_left", "kidney_right"):
                ids = sorted(set(np.unique(lab[gts[organ]])) - {0})
                mine = np.isin(lab, ids) if ids else np.zeros_like(pred)
                out[organ] = (_dice(mine, gts[organ]), r.embeddings, seconds)
        else:
            out[what] = (_dice(pred, gts[what]), r.embeddings, seconds)
        print(f"  Segment {what}: {r.summary()[:200]} ({seconds:.0f} s)", flush=True)
    return out


def tables(results) -> str:
    head = ("| scan | organ | Dice@1 | NoC90 | NoC95 | Dice@3 | Dice@5 | box DSC | DSC AUC | NSD AUC | final DSC "
            "| final NSD | s / interaction | Segment Dice | Segment embeddings |")
    lines = [head, "|" + "---|" * 2 + "---:|" * 13]
    for scan, rows, seg in results:
        for row in rows:
            c, b = row["clicks"], row["box"]
            d, emb, _ = seg.get(row["organ"], (float("nan"), 0, 0.0))
            lines.append(f"| {scan} | {row['organ']} | {c.dice_at(1):.3f} | {c.noc_text(0.90)} | {c.noc_text(0.95)} | "
                         f"{c.dice_at(3):.3f} | {c.dice_at(5):.3f} | {b.dsc[0]:.3f} | {b.dsc_auc:.2f} | "
                         f"{b.nsd_auc:.2f} | {b.final_dsc:.3f} | {b.final_nsd:.3f} | {b.seconds_per_interaction:.1f} | "
                         f"{d:.3f} | {emb} |")
    return "\n".join(lines)


def plot(results, path: Path) -> None:
    """Two panels: Dice after each click (clicks from nothing), and DSC after each step of the box protocol."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for scan, rows, _ in results:
        for row in rows:
            label = f"{scan} {row['organ']}"
            c = row["clicks"]
            a.plot(range(1, len(c.dice) + 1), c.dice, marker="o", ms=3, label=label)
            b.plot(range(len(row["box"].dsc)), row["box"].dsc, marker="o", ms=3, label=label)
    for ax, title, xlabel in ((a, "Clicks from nothing", "clicks"), (b, "Box + 5 clicks (CVPR 2025 protocol)",
                                                                         "step (0 = box)")):
        ax.axhline(0.90, color="grey", ls="--", lw=0.8)
        ax.axhline(0.95, color="grey", ls=":", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylim(0.5, 1.0)
    a.set_ylabel("3D Dice")
    b.legend(fontsize=6, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results, note: str) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["scan", "organ", "protocol", "step", "dice", "nsd", "seconds"])
    for scan, rows, seg in results:
        for row in rows:
            for i, (d, s) in enumerate(zip(row["clicks"].dice, row["clicks"].seconds)):
                w.writerow([scan, row["organ"], "clicks", i + 1, f"{d:.4f}", "", f"{s:.2f}"])
            b = row["box"]
            for i, (d, n) in enumerate(zip(b.dsc, b.nsd)):
                s = b.seconds[i] if i < len(b.seconds) else ""
                w.writerow([scan, row["organ"], "box", i, f"{d:.4f}", f"{n:.4f}", s if s == "" else f"{s:.2f}"])
            if row["organ"] in seg:
                d, emb, s = seg[row["organ"]]
                w.writerow([scan, row["organ"], "segment", emb, f"{d:.4f}", "", f"{s:.1f}"])
    (DOCS / "interactive_study.csv").write_text(buf.getvalue())
    plot(results, DOCS / "interactive_study.png")
    body = (f"{START}\n{tables(results)}\n\n{note}\n\n![Dice per click and per box-protocol step]"
            f"(interactive_study.png)\n{END}")
    doc = DOCS / "evaluation.md"
    text = doc.read_text()
    if START not in text:
        raise SystemExit(f"{doc} has no {START} marker")
    doc.write_text(text[:text.index(START)] + body + text[text.index(END) + len(END):])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    p.add_argument("--scans", default=",".join(SCANS), help="comma-separated: " + ", ".join(SCANS))
    p.add_argument("--max-clicks", type=int, default=8)
    p.add_argument("--no-docs", action="store_true", help="print only; do not write the docs")
    args = p.parse_args(argv)
    import torch

    results = []
    for name in args.scans.split(","):
        print(name, flush=True)
        vol, gts = SCANS[name](args.data)
        results.append((name, interactive(vol, gts, args.max_clicks), segment_rows(vol, gts)))
    print(tables(results))
    note = (f"Chain engine, bundled LiteMedSAM (OpenVINO encoder), CPU: {platform.machine()}, "
            f"{torch.get_num_threads()} torch threads; seconds per interaction: answer plus (re)propagation, "
            "slices embedded once per scan for the click runs (the first run of a scan pays its embeddings). "
            "Per-step values: [interactive_study.csv](interactive_study.csv).")
    if not args.no_docs:
        write(results, note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
