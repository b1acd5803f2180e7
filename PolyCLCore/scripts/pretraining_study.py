"""A small, honest reproduction study: does PolyCL pre-training (S, O, M) help fine-tuning on the
shared CT, compared with random initialisation?

Usage (repository root; CPU; re-running skips finished runs; the docs' numbers came from)::

    .venv/bin/python PolyCLCore/scripts/pretraining_study.py --seeds 0 1 --epochs 8 [--work /tmp/polycl_study]
    .venv/bin/python PolyCLCore/scripts/pretraining_study.py --seeds 0 1 --epochs 8 --report-only

A quick check of the whole chain (a few minutes; its numbers mean nothing; keep the docs' files)::

    .venv/bin/python PolyCLCore/scripts/pretraining_study.py --seeds 0 --epochs 1 --inits random s \\
        --pretrain-epochs 1 --settings "1 scan, 10%" --work /tmp/polycl_quick --docs /tmp/polycl_quick

On 2 CPU cores shared with other jobs: ~15-25 s per fine-tuning run with 11 slices, ~5 min with
112 slices; pre-training ~3-25 min per strategy depending on load.

Design (fixed before running):

* Held-out test scan: the DICOM series ``example_ct_dicom`` (20 slices, 512x512, liver on every
  slice; reference = TotalSegmentator's liver, resampled onto the image in physical space). It is
  used by NO step before the final evaluation: not in pre-training (not even unlabelled), not in
  fine-tuning, not for model selection (fine-tuning runs a fixed number of epochs and the last
  model is evaluated).
* Pre-training with the product's pre-training (:func:`polycl.pretrain.pretrain`, what ``polycl
  pretrain`` runs), one run per strategy, seed 0: the other five CT volumes (example_ct, aorta and
  pulmonary crops, DeepLesion, dcmqi 3-slice), all slices, 64 px, U-Net encoder 16..256, batch 20,
  tau 1/20, lr 1e-3, warm restarts every 5 epochs; S 3 epochs (63 steps), O and M 5 epochs (30
  steps). O and M take liver presence from example_ct's label only (the one labelled scan left),
  so their anchors are example_ct's 112 slices - and then O and M draw from identical pools
  (positives/negatives of the same presence class, all in the same scan): the two encoders come
  out bit-identical (checked), and M's fine-tuning rows are copied from O's, not re-run.
* Fine-tuning with the product's fine-tuning (:func:`polycl.finetune.finetune`, what ``polycl
  finetune`` runs: its input check, case loader, label fraction, augmentation, U-Net builder, MONAI
  Dice loss and the training loop of :mod:`polycl.training`; the paper's Adam lr 1e-3, batch 10,
  warm restarts every 5 epochs) on a folder of labelled cases written under ``<work>/cases``
  (binary liver masks, target ``1``), for a fixed number of epochs at 64 px (``keep="last"``,
  ``val_fraction=0``: the training cases are also its "validation" cases, whose Dice is logged
  and used for nothing), from random initialisation or from each pre-trained encoder (head
  dropped, decoder added), with
  - "1 scan": example_ct (112 slices, liver on 43; TotalSegmentator label 5),
  - "2 scans": + the dcmqi 3-slice CT with its hand-drawn coarse liver mask (3 slices more),
  - "1 scan, 10%": ``label_fraction=0.1`` of example_ct's slices (11), the paper's low-label regime,
  and several seeds (the fine-tuning ``seed``: data order, augmentation, decoder/random init and,
  in "1 scan, 10%", which 11 slices are labelled).
* Metrics on the held-out scan with the product's inference path (``polycl.segment.run`` on the
  fine-tuned ``model.pt``, ``unet`` mode, no atlas prior: resize back to 512x512, threshold 0.5,
  largest component) and ``polycl.evaluate.mask_scores`` (MONAI Dice and HD95 in mm on the image
  grid).

Outputs: ``<work>/runs.jsonl`` (one row per run), ``<work>/runs/<setting>-<init>-seed<N>/`` (each
fine-tuning's model folder), and in ``--docs`` (default PolyCLCore/docs/): pretraining_study.csv,
pretraining_study.png, and a markdown table printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from polycl.datasets import data_dir
from polycl.evaluate import mask_scores
from polycl.finetune import FinetuneConfig, FinetuneResult, finetune
from polycl.io import label_on_image_grid, read_label, read_volume, select_labels, write_volume
from polycl.preprocess import PreprocessConfig
from polycl.pretrain import PretrainConfig, SliceSelection, build_slice_dataset, pretrain
from polycl.pretrain.shared_data import shared_scans
from polycl.segment import SegmentOptions
from polycl.segment import run as segment
from polycl.training import read_state

#: The development data folder beside the repository, unless POLYCL_DATA_DIR names another.
os.environ.setdefault("POLYCL_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))

DOCS = Path(__file__).resolve().parents[1] / "docs"
HELD_OUT = "example_ct_dicom"
PRETRAIN_EPOCHS = {"s": 3, "o": 5, "m": 5}
INITS = ["random", "s", "o", "m"]
SETTINGS = ["1 scan, 10%", "1 scan", "2 scans"]
#: setting -> (labelled cases, label fraction)
SETTING_DATA = {"1 scan, 10%": (("example_ct",), 0.1), "1 scan": (("example_ct",), 1.0),
                "2 scans": (("example_ct", "dcmqi"), 1.0)}


def pretrain_encoders(work: Path, size: int, strategies: list[str], epochs: int | None = None) -> dict[str, Path]:
    """One encoder per strategy (``epochs`` instead of :data:`PRETRAIN_EPOCHS` when given), resumed
    or skipped when ``work`` already holds it."""
    if not strategies:
        return {}
    scans = shared_scans(data_dir(required=True), exclude=(HELD_OUT,))
    data = build_slice_dataset(scans, preprocess=PreprocessConfig(size=size), selection=SliceSelection(1.0),
                               cache_dir=work / "cache")
    out = {}
    for s in strategies:
        n = epochs or PRETRAIN_EPOCHS[s]
        path = work / f"encoder-{s}.pt"
        state = work / f"encoder-{s}.state.pt"
        done = path.is_file() and state.is_file() and read_state(state, "pre-training")["epoch"] >= n
        if not done:
            cfg = PretrainConfig(strategy=s, encoder={"name": "unet", "features": [16, 32, 64, 128, 256]}, epochs=n,
                                 lr=1e-3, skip_unusable=True, seed=0)
            pretrain(data, path, cfg, resume=state.is_file())
        out[s] = path
    return out


def case_folders(work: Path, root: Path) -> dict[str, Path]:
    """Per setting, a folder of labelled cases as ``polycl finetune`` reads them (one folder per
    case: ``image`` + ``label``, a binary liver mask, so that one target, ``1``, fits both scans)."""
    cases = work / "cases"
    ct, dq = cases / "example_ct", cases / "dcmqi"
    if not (ct / "label.nii.gz").is_file():
        ts = root / "totalsegmentator"
        ct.mkdir(parents=True, exist_ok=True)
        if not (ct / "image.nii.gz").is_symlink():
            (ct / "image.nii.gz").symlink_to(ts / "example_ct.nii.gz")
        label = read_label(ts / "example_seg_fast_force_split.nii.gz")
        write_volume(label.with_array(select_labels(label.array, "liver")), ct / "label.nii.gz")
    if not (dq / "label.nrrd").is_symlink():
        dq.mkdir(parents=True, exist_ok=True)
        (dq / "image").symlink_to(root / "dcmqi" / "ct-3slice", target_is_directory=True)
        (dq / "label.nrrd").symlink_to(root / "dcmqi" / "liver_seg.nrrd")  # values 0/1 already
    folders = {}
    for setting, (names, _) in SETTING_DATA.items():
        folder = work / "settings" / "+".join(names)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            if not (folder / name).is_symlink():
                (folder / name).symlink_to(cases / name, target_is_directory=True)
        folders[setting] = folder
    return folders


def finetune_run(folder: Path, label_fraction: float, encoder: Path | None, seed: int, epochs: int, size: int,
                 out: Path) -> FinetuneResult:
    """``polycl finetune`` with the study's settings; an interrupted run in ``out`` is resumed."""
    cfg = FinetuneConfig(target="1", epochs=epochs, size=size, encoder=str(encoder) if encoder else None,
                         label_fraction=label_fraction, val_fraction=0.0, keep="last", seed=seed, device="cpu")
    resume = (out / "state.pt").is_file()
    if not resume and out.exists():  # stopped before its first epoch was saved
        shutil.rmtree(out)
    return finetune(folder, out, cfg, resume=resume)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/polycl_study")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs (fixed; no model selection)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--settings", nargs="+", default=SETTINGS, choices=SETTINGS, metavar="SETTING",
                    help="from: " + "; ".join(SETTINGS).replace("%", "%%"))  # argparse formats help with %
    ap.add_argument("--inits", nargs="+", default=INITS, choices=INITS, help="initialisations to fine-tune from")
    ap.add_argument("--pretrain-epochs", type=int, default=None,
                    help=f"pre-training epochs for every strategy (default: the design's {PRETRAIN_EPOCHS}; "
                         "for quick checks)")
    ap.add_argument("--docs", type=Path, default=DOCS, help="folder for pretraining_study.csv and .png")
    ap.add_argument("--report-only", action="store_true", help="only write the table and plot from runs.jsonl")
    args = ap.parse_args()
    if args.report_only:
        rows = [json.loads(x) for x in (Path(args.work) / "runs.jsonl").read_text().splitlines()]
        report(rows, args)
        return
    torch.set_num_threads(2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    root = data_dir(required=True)
    inits = [i for i in INITS if i in args.inits]
    encoders = pretrain_encoders(work, args.size, [i for i in inits if i != "random"], args.pretrain_epochs)
    folders = case_folders(work, root)

    test = read_volume(root / "totalsegmentator" / HELD_OUT)
    ref_label = label_on_image_grid(read_label(root / "totalsegmentator" / "example_seg_dicom.nii.gz"), test)
    ref = select_labels(ref_label.array, 5)

    runs_path = work / "runs.jsonl"
    same_o_m = False
    if "o" in encoders and "m" in encoders:
        sd_o, sd_m = (torch.load(encoders[k], weights_only=True)["state_dict"] for k in ("o", "m"))
        same_o_m = all(torch.equal(sd_o[k], sd_m[k]) for k in sd_o)
        print(f"O and M encoders bit-identical: {same_o_m}", flush=True)
    done = {}
    if runs_path.is_file():
        for line in runs_path.read_text().splitlines():
            r = json.loads(line)
            done[(r["init"], r["setting"], r["seed"])] = r
    for setting in args.settings:
        fraction = SETTING_DATA[setting][1]
        for seed in args.seeds:
            for init in inits:
                if (init, setting, seed) in done:
                    continue
                if init == "m" and same_o_m and ("o", setting, seed) in done:
                    # With one labelled pre-training scan, O and M draw from identical pools: the two
                    # encoders are bit-identical, so are their fine-tuning runs. Recorded, not re-run.
                    row = dict(done[("o", setting, seed)], init="m", note="encoder bit-identical to O")
                    with open(runs_path, "a") as f:
                        f.write(json.dumps(row) + "\n")
                    done[(init, setting, seed)] = row
                    continue
                t0 = time.time()
                slug = setting.replace(", ", "-").replace(" ", "").replace("%", "pct")  # 1scan-10pct, 1scan, 2scans
                out = work / "runs" / f"{slug}-{init}-seed{seed}"
                result = finetune_run(folders[setting], fraction, encoders.get(init), seed, args.epochs, args.size, out)
                pred = segment(test, str(result.model_path), SegmentOptions(mode="unet", prior="off", device="cpu")).mask
                sc = mask_scores(pred, ref, test.spacing_zyx)
                row = {"init": init, "setting": setting, "seed": seed, "dice": sc.dice, "hd95_mm": sc.hd95_mm,
                       "train_slices": result.train_slices, "final_train_loss": result.history[-1]["loss"],
                       "epochs": args.epochs, "seconds": round(time.time() - t0, 1)}
                print(json.dumps(row), flush=True)
                with open(runs_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                done[(init, setting, seed)] = row
    report(list(done.values()), args)


def report(rows: list[dict], args) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda r: (SETTINGS.index(r["setting"]), INITS.index(r["init"]), r["seed"]))
    with open(docs / "pretraining_study.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(dict.fromkeys([*rows[0], "note"])), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    label = {"random": "random init", "s": "PolyCL-S", "o": "PolyCL-O", "m": "PolyCL-M"}
    print("| fine-tuning labels | initialisation | Dice mean ± sd | HD95 mm mean ± sd | seeds |")
    print("|---|---|---|---|---|")
    settings = [s for s in SETTINGS if any(r["setting"] == s for r in rows)]
    for s in settings:
        for init in INITS:
            sel = [r for r in rows if r["setting"] == s and r["init"] == init]
            if not sel:
                continue
            d = np.array([r["dice"] for r in sel])
            h = np.array([r["hd95_mm"] for r in sel], dtype=float)
            hd = f"{np.nanmean(h):.1f} ± {np.nanstd(h):.1f}" if np.isfinite(h).any() else "n/a (empty)"
            print(f"| {s} | {label[init]} | {d.mean():.3f} ± {d.std():.3f} | {hd} | {len(sel)} |")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=100)
    width = 0.8 / len(INITS)
    for k, init in enumerate(INITS):
        for ax, key in zip(axes, ("dice", "hd95_mm"), strict=True):
            for j, s in enumerate(settings):
                vals = [r[key] for r in rows if r["setting"] == s and r["init"] == init]
                x = j + (k - (len(INITS) - 1) / 2) * width
                ax.bar(x, np.nanmean(vals) if vals else 0, width, color=f"C{k}", alpha=0.5,
                       label=label[init] if j == 0 else None)
                ax.plot([x] * len(vals), vals, "k.", ms=4)
    for ax, title in zip(axes, ("Dice on held-out scan (higher is better)", "HD95 in mm (lower is better)"), strict=True):
        ax.set_xticks(range(len(settings)))
        ax.set_xticklabels(settings, fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Fine-tuned at {args.size} px, {args.epochs} epochs; bars = mean, dots = seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(docs / "pretraining_study.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
