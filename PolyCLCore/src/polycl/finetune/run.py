"""``finetune()``: check the settings and every case, then run :class:`~polycl.finetune.job.FinetuneJob`
in the training loop (:func:`polycl.training.fit`) and write the registry entry."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from polycl.atomic import write_text_atomic
from polycl.cases import find_labelled_cases
from polycl.checkpoint import sha256_file
from polycl.errors import InputError
from polycl.finetune import data as finetune_data
from polycl.finetune.config import FinetuneConfig
from polycl.finetune.job import FinetuneJob
from polycl.progress import CancelToken, Progress
from polycl.training import fit


@dataclass
class FinetuneResult:
    model_path: Path
    best_val_dice: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    train_cases: list[str] = field(default_factory=list)
    val_cases: list[str] = field(default_factory=list)
    train_slices: int = 0  # slices trained on: the training cases' slices, label_fraction of them


def finetune(data_dir: str | Path, out_dir: str | Path, cfg: FinetuneConfig, *, resume: bool = False,
             progress: Progress | None = None, cancel: CancelToken | None = None) -> FinetuneResult:
    """Fine-tune on ``data_dir`` and write ``model.pt`` (best), ``state.pt`` (resumable), ``history.json``,
    ``training_curve.png`` and ``model.json`` into ``out_dir``. The settings and all cases are
    checked before anything is written (one :class:`InputError` listing every problem).

    ``progress(epochs_done, epochs, message)`` after every optimiser step (a fraction of an epoch)
    and every epoch (the epoch's message carries its loss and validation Dice; rank 0 only under
    torchrun). A cancelled ``cancel`` token, like Ctrl-C (SIGINT), keeps the resumable state of the
    last finished epoch and raises :class:`~polycl.errors.Cancelled`."""
    out = Path(out_dir)
    state_path = out / "state.pt"
    if resume and not state_path.is_file():
        raise InputError(f"{state_path}: nothing to resume (no saved training state)")
    if not resume and (out / "model.pt").exists():
        raise InputError(f"{out} already holds a model; choose another folder or pass --resume")
    cfg.validate()
    cases = find_labelled_cases(data_dir)
    train, val = finetune_data.choose_split(cases, cfg, data_dir)
    loaded = finetune_data.load_cases(cases, cfg)  # every case checked before training starts
    meta = {"target": cfg.target, "target_values": list(cfg.label_values()), "components": cfg.components_kept(),
            "preprocess": cfg.preprocess().to_dict(), "train_cases": [c.name for c in train],
            "val_cases": [c.name for c in val], "label_fraction": cfg.label_fraction, "config": cfg.to_json()}
    job = FinetuneJob(cfg, out, finetune_data.training_slices(loaded, train, cfg), [loaded[c.name] for c in val], meta)
    run = fit(job, epochs=cfg.epochs, state_path=state_path, device=cfg.device, resume=resume,
              progress=progress, cancel=cancel)
    result = FinetuneResult(out / "model.pt", job.best, job.best_epoch, run.history, meta["train_cases"],
                            meta["val_cases"], len(job.dataset))
    if run.info.is_main:
        write_model_json(out, result, cfg, job.init)
    return result


def write_model_json(out: Path, result: FinetuneResult, cfg: FinetuneConfig, init: str, name: str | None = None) -> None:
    """Registry entry beside the weights, so the folder can be installed as a user model."""
    held_out = result.val_cases != result.train_cases
    meta = {
        "name": name or out.name, "file": "model.pt", "kind": "segmentation", "target": cfg.target,
        "sha256": sha256_file(result.model_path),
        "description": f"U-Net fine-tuned from {init}, best epoch {result.best_epoch}/{cfg.epochs}",
        "training_data": f"{len(result.train_cases)} case(s): {', '.join(result.train_cases)}",
        "scores": {("val_dice" if held_out else "train_dice"): round(result.best_val_dice, 4)},
    }
    write_text_atomic(out / "model.json", json.dumps(meta, indent=2))
