"""Pre-train the bundled starter encoders polycl-encoder-unet-{s,o,m} on the shared real CT.

Usage (from the repository root; CPU is fine, a few minutes per strategy on 2 cores)::

    .venv/bin/python PolyCLCore/scripts/train_starter_encoders.py [--work /tmp/polycl_starters] [--strategies s o m]

Data: every CT volume in POLYCL_DATA_DIR (see polycl.pretrain.shared_data: example_ct, the DICOM
series, the aorta and pulmonary crops, the DeepLesion volume and the 3-slice dcmqi CT; example_ct_sm
is a sub-volume of example_ct and is not counted twice). O and M use the liver labels of
example_ct and of the DICOM series; slices without presence information are left out as anchors
(skip_unusable), and the plan records how many.

Settings: U-Net encoder (16-32-64-128-256), 128 px slices, ALL slices of each scan (fraction 1.0,
not the paper's middle 30%: the shared data are tiny and the middle 30% of the thorax-to-pelvis
example_ct holds only 4 liver slices), batch 20, tau = 1/20, cosine warm restarts every 5 epochs,
lr 1e-3 (the paper's 1e-4 barely moves the loss in the ~100 steps that fit here). Epochs are set so
each strategy gets about 60 optimisation steps (minutes on 2 shared cores). The weights are stored in fp16; the model card
(<name>.md) and loss curve (<name>.loss.png) are written beside them in polycl/data/models/.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import os
from pathlib import Path

from polycl.checkpoint import read_checkpoint, sha256_file
from polycl.datasets import data_dir
from polycl.preprocess import PreprocessConfig
from polycl.pretrain import PretrainConfig, SliceSelection, build_slice_dataset, pretrain
from polycl.pretrain.shared_data import shared_scans

#: The development data folder beside the repository, unless POLYCL_DATA_DIR names another.
os.environ.setdefault("POLYCL_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))

MODELS = Path(__file__).resolve().parents[1] / "src" / "polycl" / "data" / "models"
EPOCHS = {"s": 3, "o": 9, "m": 10}
NAMES = {"s": "scan (PolyCL-S)", "o": "organ presence (PolyCL-O)", "m": "scan and organ presence (PolyCL-M)"}


def card(name: str, strategy: str, ckpt: dict, sha: str, seconds: float) -> str:
    meta = ckpt["meta"]
    rows = "\n".join(f"| {r['case']} | {r['slices']} | {r['present']} | {r['absent']} | {r['unknown']} |"
                     for r in meta["data"]["scans"])
    hist = meta["loss_history"]
    dropped = "; ".join(f"{r}: " + ", ".join(f"{c} {n}" for c, n in per.items()) for r, per in meta["plan"]["dropped"].items()) or "none"
    return f"""# {name}

A PolyCL **encoder** (U-Net contracting path, features {ckpt['config']['features']}), contrastively
pre-trained with example selection by {NAMES[strategy]}: {meta['strategy_description']}.
It is a *starter*: pre-trained on the six small real CT volumes the project ships for tests, not on a
large dataset. Fine-tune it with `polycl finetune --encoder {name}.pt ...`; for real use, pre-train on
your own folder of CT (`polycl pretrain DATA_DIR --strategy {strategy} ...`).

- File: `{name}.pt` (fp16 weights, kind "encoder"), SHA-256 `{sha}`
- Strategy: {strategy.upper()}; anchors used: {meta['plan']['anchors']}; anchors left out: {dropped}
- Training: {meta['epochs']} epochs ({-(-meta['plan']['anchors'] // meta['batch_size']) * meta['epochs']} steps),
  batch {meta['batch_size']}, lr {meta['lr']} (the paper uses 1e-4 for 100 epochs on large data; 1e-3 here
  because only ~60 steps fit here), tau {meta['tau']:.3f} (1/batch), Adam, cosine annealing with warm restarts
  every {meta['restart_epochs']} epochs, seed {meta['seed']}; CPU (2 shared cores), {seconds / 60:.1f} min.
- Preprocessing: window level {meta['preprocess']['level']} / width {meta['preprocess']['width']} HU, 0..1, {meta['preprocess']['size']} px slices,
  all slices of each scan (fraction {meta['data']['selection']['fraction']}; the paper uses the middle 30%).
- Loss: {hist[0]['loss']:.4f} after epoch 1 -> {hist[-1]['loss']:.4f} after epoch {hist[-1]['epoch']} (log 2 = 0.693 is chance).
  ![loss curve]({name}.loss.png)

## Training data (liver presence from TotalSegmentator label 5; model outputs, not manual labels)

| scan | slices | liver present | absent | unknown |
|---|---|---|---|---|
{rows}

Sources: TotalSegmentator test files (Apache-2.0 code; dataset CC BY 4.0, Wasserthal et al. 2023),
NIH DeepLesion via MedSAM2 (cite Yan et al. 2018), QIICR dcmqi test data (BSD-3-Clause).

## Limits
Six scans from few patients: the features are far from what 100 epochs on LiTS/KiTS give in the
paper. See docs/pretraining.md for a small study of what this pre-training does and does not change.
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/polycl_starters")
    ap.add_argument("--strategies", nargs="+", default=["s", "o", "m"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = build_slice_dataset(shared_scans(data_dir(required=True)), preprocess=PreprocessConfig(size=args.size),
                               selection=SliceSelection(1.0), cache_dir=work / "cache")
    entries = []
    for s in args.strategies:
        name = f"polycl-encoder-unet-{s}"
        cfg = PretrainConfig(strategy=s, encoder={"name": "unet", "features": [16, 32, 64, 128, 256]}, epochs=EPOCHS[s],
                             lr=args.lr, skip_unusable=True, half=True, seed=0)
        t0 = time.time()
        result = pretrain(data, work / f"{name}.pt", cfg, resume=(work / f"{name}.state.pt").is_file())
        seconds = time.time() - t0
        MODELS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(result.encoder_path, MODELS / f"{name}.pt")
        shutil.copyfile(result.curve_path, MODELS / f"{name}.loss.png")
        ckpt = read_checkpoint(MODELS / f"{name}.pt", kind="encoder")
        sha = sha256_file(MODELS / f"{name}.pt")
        (MODELS / f"{name}.md").write_text(card(name, s, ckpt, sha, seconds))
        entries.append({"name": name, "file": f"{name}.pt", "kind": "encoder", "sha256": sha, "card": f"{name}.md",
                        "description": f"PolyCL-{s.upper()} U-Net encoder, starter pre-trained on the shared CT "
                                       f"({ckpt['meta']['epochs']} epochs, 128 px)",
                        "licence": "Apache-2.0 (weights); data CC BY 4.0 / BSD-3 / NIH DeepLesion terms",
                        "training_data": "6 shared real CT volumes (TotalSegmentator examples, DeepLesion, dcmqi); "
                                         "liver presence from TotalSegmentator label 5" if s != "s" else
                                         "6 shared real CT volumes (TotalSegmentator examples, DeepLesion, dcmqi), unlabelled"})
        print(json.dumps(entries[-1], indent=1), flush=True)
    (work / "registry_entries.json").write_text(json.dumps(entries, indent=1))


if __name__ == "__main__":
    main()
