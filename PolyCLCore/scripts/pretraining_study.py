"""A small, honest reproduction study: does PolyCL pre-training (S, O, M) help fine-tuning on the
shared CT, compared with random initialisation?

Usage (repository root; CPU; re-running skips finished runs; the docs' numbers came from)::

    .venv/bin/python PolyCLCore/scripts/pretraining_study.py --seeds 0 1 --epochs 8 [--work /tmp/polycl_study]
    .venv/bin/python PolyCLCore/scripts/pretraining_study.py --seeds 0 1 --epochs 8 --report-only

On 2 CPU cores shared with other jobs: ~15-25 s per fine-tuning run with 11 slices, ~5 min with
112 slices; pre-training ~3-25 min per strategy depending on load.

Design (fixed before running):

* Held-out test scan: the DICOM series ``example_ct_dicom`` (20 slices, 512x512, liver on every
  slice; reference = TotalSegmentator's liver, resampled onto the image in physical space). It is
  used by NO step before the final evaluation: not in pre-training (not even unlabelled), not in
  fine-tuning, not for model selection (fine-tuning runs a fixed number of epochs and the last
  model is evaluated).
* Pre-training (one run per strategy, seed 0): the other five CT volumes (example_ct, aorta and
  pulmonary crops, DeepLesion, dcmqi 3-slice), all slices, 64 px, U-Net encoder 16..256, batch 20,
  tau 1/20, lr 1e-3, warm restarts every 5 epochs; S 3 epochs (63 steps), O and M 5 epochs (30
  steps). O and M take liver presence from example_ct's label only (the one labelled scan left),
  so their anchors are example_ct's 112 slices - and then O and M draw from identical pools
  (positives/negatives of the same presence class, all in the same scan): the two encoders come
  out bit-identical (checked), and M's fine-tuning rows are copied from O's, not re-run.
* Fine-tuning with the project's fine-tuning code (``polycl.finetune``: its case loader,
  augmentation, U-Net builder and MONAI Dice loss; the paper's Adam lr 1e-3, batch 10, warm
  restarts every 5 epochs) for a fixed number of epochs at 64 px, from random initialisation or
  from each pre-trained encoder (head dropped, decoder added), with
  - "1 scan": example_ct (112 slices, liver on 43; TotalSegmentator label 5),
  - "2 scans": + the dcmqi 3-slice CT with its hand-drawn coarse liver mask (3 slices more),
  - "1 scan, 10%": 10% of example_ct's slices (11) labelled, the paper's low-label regime,
  and several seeds (seed = fine-tuning data order, augmentation and decoder/random init).
* Metrics on the held-out scan with the product's inference path (``polycl.segment.run`` in ``unet`` mode, no atlas prior: resize back
  to 512x512, threshold 0.5, largest component) and ``polycl.evaluate.mask_scores`` (MONAI Dice and
  HD95 in mm on the image grid).

Outputs: ``<work>/runs.jsonl`` (one row per run), and in PolyCLCore/docs/: pretraining_study.csv,
pretraining_study.png, and a markdown table printed at the end.
"""

from __future__ import annotations

import argparse
import json
import time
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from polycl.cases import Case
from polycl.datasets import data_dir
from polycl.evaluate import mask_scores
from polycl.finetune import FinetuneConfig, SliceDataset, build_model, load_case, make_loss
from polycl.inference import LoadedModel
from polycl.io import label_on_image_grid, read_label, read_volume, select_labels
from polycl.models import ModelEntry
from polycl.preprocess import PreprocessConfig
from polycl.pretrain import PretrainConfig, SliceSelection, build_slice_dataset, pretrain
from polycl.pretrain.shared_data import shared_scans
from polycl.segment import SegmentOptions
from polycl.segment import run as segment

#: The development data folder beside the repository, unless POLYCL_DATA_DIR names another.
os.environ.setdefault("POLYCL_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))

DOCS = Path(__file__).resolve().parents[1] / "docs"
HELD_OUT = "example_ct_dicom"
PRETRAIN_EPOCHS = {"s": 3, "o": 5, "m": 5}
INITS = ["random", "s", "o", "m"]
SETTINGS = ["1 scan, 10%", "1 scan", "2 scans"]


def pretrain_encoders(work: Path, size: int) -> dict[str, Path]:
    scans = shared_scans(data_dir(required=True), exclude=(HELD_OUT,))
    data = build_slice_dataset(scans, preprocess=PreprocessConfig(size=size), selection=SliceSelection(1.0),
                               cache_dir=work / "cache")
    out = {}
    for s, epochs in PRETRAIN_EPOCHS.items():
        path = work / f"encoder-{s}.pt"
        state = work / f"encoder-{s}.state.pt"
        done = path.is_file() and torch.load(state, weights_only=True)["epoch"] >= epochs if state.is_file() else False
        if not done:
            cfg = PretrainConfig(strategy=s, encoder={"name": "unet", "features": [16, 32, 64, 128, 256]}, epochs=epochs,
                                 lr=1e-3, skip_unusable=True, seed=0)
            pretrain(data, path, cfg, resume=state.is_file())
        out[s] = path
    return out


def labelled_cases(root: Path) -> dict[str, tuple[Case, FinetuneConfig]]:
    ts = root / "totalsegmentator"
    return {
        "example_ct": Case("example_ct", ts / "example_ct.nii.gz", ts / "example_seg_fast_force_split.nii.gz"),
        "dcmqi": Case("dcmqi", root / "dcmqi" / "ct-3slice", root / "dcmqi" / "liver_seg.nrrd"),
    }


def finetune_run(encoder: Path | None, images: torch.Tensor, masks: torch.Tensor, seed: int, epochs: int, size: int):
    cfg = FinetuneConfig(encoder=str(encoder) if encoder else None, size=size, seed=seed, device="cpu")
    torch.manual_seed(seed)
    model, net_config, init = build_model(cfg)
    dataset = SliceDataset(images, masks, True, seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=len(dataset) > cfg.batch_size,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=max(1, cfg.restart_epochs * len(loader)))
    loss_fn = make_loss("dice")
    model.train()
    losses = []
    for _ in range(epochs):
        epoch_losses = []
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            epoch_losses.append(float(loss))
        losses.append(float(np.mean(epoch_losses)))
    return model.eval(), losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/polycl_study")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs (fixed; no model selection)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--settings", nargs="+", default=SETTINGS)
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
    encoders = pretrain_encoders(work, args.size)

    cfg = FinetuneConfig(size=args.size)
    cases = labelled_cases(root)
    ct = load_case(cases["example_ct"], cfg)
    dq = load_case(cases["dcmqi"], FinetuneConfig(size=args.size, target="1"))
    rng = np.random.default_rng(0)
    ten = np.sort(rng.permutation(len(ct.images))[: max(1, round(0.1 * len(ct.images)))])
    data = {"1 scan": (ct.images, ct.masks), "2 scans": (torch.cat([ct.images, dq.images]), torch.cat([ct.masks, dq.masks])),
            "1 scan, 10%": (ct.images[ten], ct.masks[ten])}

    test = read_volume(root / "totalsegmentator" / HELD_OUT)
    ref_label = label_on_image_grid(read_label(root / "totalsegmentator" / "example_seg_dicom.nii.gz"), test)
    ref = select_labels(ref_label.array, 5)

    runs_path = work / "runs.jsonl"
    sd_o, sd_m = (torch.load(encoders[k], weights_only=True)["state_dict"] for k in ("o", "m"))
    same_o_m = all(torch.equal(sd_o[k], sd_m[k]) for k in sd_o)
    print(f"O and M encoders bit-identical: {same_o_m}", flush=True)
    done = {}
    if runs_path.is_file():
        for line in runs_path.read_text().splitlines():
            r = json.loads(line)
            done[(r["init"], r["setting"], r["seed"])] = r
    for setting in args.settings:
        images, masks = data[setting]
        for seed in args.seeds:
            for init in INITS:
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
                model, losses = finetune_run(encoders.get(init), images, masks, seed, args.epochs, args.size)
                loaded = LoadedModel(network=model, entry=ModelEntry(name=f"study-{init}", path=work / "none"),
                                     preprocess=PreprocessConfig(size=args.size), target="liver", components=1,
                                     device=torch.device("cpu"))
                pred = segment(test, loaded, SegmentOptions(mode="unet", prior="off")).mask
                sc = mask_scores(pred, ref, test.spacing_zyx)
                row = {"init": init, "setting": setting, "seed": seed, "dice": sc.dice, "hd95_mm": sc.hd95_mm,
                       "train_slices": int(len(images)), "final_train_loss": losses[-1], "epochs": args.epochs,
                       "seconds": round(time.time() - t0, 1)}
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

    DOCS.mkdir(exist_ok=True)
    rows = sorted(rows, key=lambda r: (SETTINGS.index(r["setting"]), INITS.index(r["init"]), r["seed"]))
    with open(DOCS / "pretraining_study.csv", "w", newline="") as f:
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
    fig.savefig(DOCS / "pretraining_study.png")
    plt.close(fig)


if __name__ == "__main__":
    main()
