"""Train the bundled starter segmentation models on the shared real CT (reproducible recipe).

    .venv/bin/python PolyCLCore/scripts/train_starter_models.py --target liver \
        --encoder PolyCLCore/src/polycl/data/models/polycl-encoder-unet-m.pt --epochs 10 -o /tmp/starter-liver

Training case: ``example_ct`` (TotalSegmentator example, 3 mm). For the liver, the DICOM series
``example_ct_dicom`` is either the held-out case (scored every epoch, never trained on, and with
``--keep last``, the default here, it does not pick the checkpoint either) or, with
``--train-on-dicom``, a second training case (the bundled model; its held-out score then comes from
the dcmqi 3-slice CT, see the model card). The kidneys appear in
``example_ct`` only, so the kidney model has no held-out score. The case folder is made of
symbolic links in a temporary directory; nothing is copied.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import os
from pathlib import Path

import torch

import polycl.finetune as ft
from polycl.datasets import data_dir
from polycl.progress import terminal

#: The development data folder beside the repository, unless POLYCL_DATA_DIR names another.
os.environ.setdefault("POLYCL_DATA_DIR", str(Path(__file__).resolve().parents[3] / "shared" / "data"))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", choices=["liver", "kidney"], default="liver")
    p.add_argument("--encoder", default=None, help="PolyCL encoder checkpoint (default: random initialisation)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--keep", default="last", choices=["best", "last"])
    p.add_argument("--train-on-dicom", action="store_true",
                   help="liver: train on the DICOM series too (then nothing is held out; score on dcmqi instead)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", required=True)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ts = data_dir(required=True) / "totalsegmentator"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "example_ct").mkdir()
        (root / "example_ct" / "image.nii.gz").symlink_to(ts / "example_ct.nii.gz")
        (root / "example_ct" / "label.nii.gz").symlink_to(ts / "example_seg_fast_force_split.nii.gz")
        held_out = []
        if args.target == "liver":
            (root / "dicom").mkdir()
            (root / "dicom" / "image").symlink_to(ts / "example_ct_dicom", target_is_directory=True)
            (root / "dicom" / "label.nii.gz").symlink_to(ts / "example_seg_dicom.nii.gz")
            held_out = [] if args.train_on_dicom else ["dicom"]
        # fixed split: train on example_ct (+ DICOM), score the held-out case (none held out: score the training case)
        cfg = ft.FinetuneConfig(target=args.target, epochs=args.epochs, size=args.size, loss="dice+bce",
                                encoder=args.encoder, keep=args.keep, seed=0, val_cases=tuple(held_out),
                                val_fraction=0.0)
        with terminal("fine-tune", unit="step") as bar:
            result = ft.finetune(root, args.output, cfg, progress=bar)
    print(json.dumps({"kept_epoch": result.best_epoch, "val_dice": result.best_val_dice,
                      "val_cases": result.val_cases}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
