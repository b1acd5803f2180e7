"""The fine-tuning job for :func:`polycl.training.fit`: the U-Net, its loss, its batches, validation
and the files it writes.

Several processes (``torchrun ... finetune``, DistributedDataParallel): ``batch_size`` is the
*global* batch. Every epoch has one seeded permutation of the training slices
(:class:`~polycl.training.batches.GlobalBatchSampler`); each global batch is split into equal
contiguous shares, one per rank. The loss is MONAI's, computed on the whole global batch (each
rank gathers the others' logits, its own stay differentiable, and scales by the world size so that
DDP's gradient average is the full batch's gradient), so N processes take the same steps as one
process would, up to float rounding. Validation cases are shared out and their scores gathered.
Rank 0 writes the checkpoint, state, history and curve.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from polycl import distributed as D
from polycl.atomic import write_text_atomic
from polycl.checkpoint import load_state_strict, read_checkpoint, save_checkpoint
from polycl.errors import InputError
from polycl.finetune.config import FinetuneConfig
from polycl.finetune.data import CaseSlices, SliceDataset
from polycl.models import resolve_model
from polycl.networks import SegmentationUNet, build_encoder
from polycl.training.batches import GlobalBatchSampler, gather
from polycl.training import Job, plot_history


def build_model(cfg: FinetuneConfig) -> tuple[SegmentationUNet, dict, str]:
    """The U-Net to fine-tune: encoder from a PolyCL checkpoint (head dropped) or random."""
    if cfg.encoder:
        entry = resolve_model(cfg.encoder, kind="encoder")  # a registry name or a checkpoint path
        ckpt = read_checkpoint(entry.path, sha256=entry.sha256, kind="encoder")
        encoder = build_encoder(ckpt["config"])
        load_state_strict(encoder, ckpt["state_dict"], str(entry.path))
        strategy = ckpt.get("meta", {}).get("strategy", "?")
        enc_config, init = dict(ckpt["config"]), f"PolyCL encoder {Path(cfg.encoder).name} ({strategy})"
    else:
        enc_config = {"name": cfg.encoder_arch, "in_channels": 1, "features": list(cfg.features)}
        encoder, init = build_encoder(enc_config), "random initialisation"
    return SegmentationUNet(encoder, 1), {"encoder": enc_config, "out_channels": 1}, init


def make_loss(name: str) -> torch.nn.Module:
    """MONAI's soft Dice on sigmoid outputs, batch-wise (empty slices do not divide by zero);
    "dice+bce" adds binary cross-entropy (MONAI DiceCELoss)."""
    from monai.losses import DiceCELoss, DiceLoss

    if name == "dice":
        return DiceLoss(sigmoid=True, batch=True)
    if name == "dice+bce":
        return DiceCELoss(sigmoid=True, batch=True)
    raise InputError(f"unknown loss '{name}'; use dice or dice+bce")


def global_batch_loss(loss_fn: torch.nn.Module, logits: torch.Tensor, target: torch.Tensor,
                      info: D.DistInfo) -> torch.Tensor:
    """``loss_fn`` on the global batch: every rank's logits and targets gathered in rank order, this
    rank's logits kept differentiable (:func:`polycl.training.batches.gather`). Multiply by the world
    size before ``backward`` so that DDP's gradient average equals the gradient of this loss."""
    return loss_fn(gather(logits, info), gather(target, info))


@torch.inference_mode()
def validation_dice(model: torch.nn.Module, cases: list[CaseSlices], device: torch.device,
                    batch: int = 16) -> dict[str, float]:
    """3D Dice per case on the model grid (threshold 0.5 on the sigmoid), by case name."""
    from monai.metrics import compute_dice

    model.eval()
    scores = {}
    for c in cases:
        preds = []
        for s in range(0, len(c.images), batch):
            preds.append((torch.sigmoid(model(c.images[s:s + batch].float().to(device))) > 0.5).cpu())
        pred = torch.cat(preds).permute(1, 0, 2, 3).unsqueeze(0).float()  # (1, 1, z, S, S)
        gt = c.masks.permute(1, 0, 2, 3).unsqueeze(0).float()
        scores[c.name] = float(compute_dice(pred, gt, include_background=True, ignore_empty=False).item())
    model.train()
    return scores


class FinetuneJob(Job):
    """Dice-loss training of :func:`build_model`'s U-Net on ``train`` slices, validated on ``val``
    cases every epoch; keeps ``model.pt`` (best or last), ``history.json`` and ``training_curve.png``."""

    kind = "fine-tuning"

    def __init__(self, cfg: FinetuneConfig, out: Path, dataset: SliceDataset, val: list[CaseSlices],
                 meta: dict) -> None:
        self.cfg, self.out, self.dataset, self.val, self.meta = cfg, out, dataset, val, meta
        self.best, self.best_epoch, self.init = -1.0, 0, ""

    def build(self, info: D.DistInfo, device: torch.device) -> None:
        cfg = self.cfg
        self.info, self.device = info, device
        self.sampler = GlobalBatchSampler(len(self.dataset), cfg.batch_size, seed=cfg.seed, rank=info.rank,
                                          world_size=info.world_size)
        self.loader = DataLoader(self.dataset, batch_sampler=self.sampler)
        torch.manual_seed(cfg.seed)
        self.net, self.net_config, self.init = build_model(cfg)  # the same initial weights on every rank
        self.net.to(device).train()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        # restarts every restart_epochs epochs, stepped per iteration (Job.after_step)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(self.optimizer, T_0=cfg.restart_epochs)
        self.loss_fn = make_loss(cfg.loss)
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)

    def settings(self) -> dict:
        s = {k: v for k, v in self.cfg.to_json().items() if k not in ("epochs", "device", "components", "keep")}
        return dict(s, train_cases=self.meta["train_cases"], val_cases_used=self.meta["val_cases"])

    def batches(self, epoch: int) -> DataLoader:
        self.sampler.set_epoch(epoch)
        self.dataset.set_epoch(epoch)
        return self.loader

    def loss(self, model, batch) -> tuple[torch.Tensor, float]:
        x, y = (t.to(self.device) for t in batch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = model(x)
        loss = global_batch_loss(self.loss_fn, logits.float(), y, self.info)
        return loss * self.info.world_size, loss.item()

    def end_epoch(self, epoch: int, record: dict) -> dict:
        mine = validation_dice(self.net, D.shard(self.val, self.info), self.device)
        scores = {k: v for part in D.gather_objects(self.info, mine) for k, v in part.items()}
        scores = {c.name: scores[c.name] for c in self.val}  # case order, whatever rank scored it
        val = float(np.mean(list(scores.values())))
        if self.cfg.keep == "last" or val > self.best:  # "best"/"best_epoch" describe the kept checkpoint
            self.best, self.best_epoch = val, epoch
            digests = D.gather_digests(self.info, D.weights_digest(self.net))
            if self.info.is_main:
                save_checkpoint(self.out / "model.pt", self.net, self.net_config, kind="segmentation",
                                meta={**self.meta, "init": self.init, "epoch": epoch, "scores": {"val_dice": val},
                                      "rank_weight_sha256": digests, "world_size": self.info.world_size})
        return {"val_dice": val, "val_per_case": scores}

    def summary(self, record: dict) -> str:
        return f"loss {record['loss']:.3f}, validation Dice {record['val_dice']:.3f} (best {self.best:.3f})"

    def write(self, epoch: int, history: list[dict]) -> None:
        write_text_atomic(self.out / "history.json", json.dumps(history, indent=1))
        plot_history(history, self.out / "training_curve.png", series={"loss": "train loss", "val_dice": "validation Dice"},
                     step_key="step_losses", ylim=(0, None) if self.cfg.loss != "dice" else (0, 1))

    def extra_state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_extra_state(self, extra: dict) -> None:
        self.best, self.best_epoch = float(extra["best"]), int(extra["best_epoch"])
