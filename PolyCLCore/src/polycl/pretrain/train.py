"""The PolyCL pre-training loop.

Encoder f + projection head g (global average pool + linear, 256-d) are trained with the PolyCL
loss on (anchor, positive, negative) slice triplets chosen by the strategy (S, O or M). Defaults
are the paper's: Adam, lr 1e-4, 20 anchors per minibatch, cosine annealing with warm restarts every
5 epochs (stepped per iteration), tau = 1 / minibatch size; mixed precision on a GPU.

It runs as a job of the training loop shared with fine-tuning (:func:`polycl.training.fit`: one
resumable state format, epochs numbered from 1, DDP, progress and cancel, teardown in ``finally``).
Every epoch, rank 0 writes (each atomically):

* ``output`` (e.g. ``encoder.pt``): the encoder only, as a ``kind="encoder"`` checkpoint that
  :func:`polycl.finetune` loads (``build_encoder(ckpt["config"])`` + strict weights); its ``meta``
  holds the strategy, epochs, data, plan, loss history and the head's *config*;
* ``<output stem>.state.pt``: the training state for ``resume`` (:mod:`polycl.training.loop`:
  encoder and projection head, optimizer, scheduler, scaler, epoch, history). The head's weights
  live only here, so fine-tuning never sees them (:func:`load_pretrained_head` reads them);
* ``<output stem>.loss.png``: the loss curve.

Under ``torchrun`` it runs as DistributedDataParallel (see :mod:`polycl.distributed`). ``batch_size``
is the *global* minibatch, as in fine-tuning (:class:`~polycl.training.batches.GlobalBatchSampler`:
each rank embeds its share, the embeddings are gathered and the loss is the whole minibatch's, its
negatives included), and tau defaults to 1 / ``batch_size``: N processes take the same steps as one,
and a state saved by N processes resumes on M. Each epoch the ranks compare SHA-256 digests of their
weights and rank 0 records them in the checkpoint's meta.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from polycl import distributed as D
from polycl.checkpoint import load_state_strict, save_checkpoint
from polycl.errors import InputError
from polycl.networks import ProjectionHead, build_encoder
from polycl.progress import CancelToken, Progress
from polycl.pretrain.dataset import SliceDataset
from polycl.pretrain.loss import default_tau, polycl_loss
from polycl.pretrain.samplers import DESCRIPTIONS, SamplingPlan, TripletSampler
from polycl.training import Job, fit, plot_history, read_state
from polycl.training.batches import GlobalBatchSampler, gather


@dataclass
class PretrainConfig:
    """Pre-training settings; defaults are the paper's (except ``epochs``: the paper trains 100)."""

    strategy: str = "s"
    encoder: dict = field(default_factory=lambda: {"name": "unet"})
    proj_dim: int = 256
    epochs: int = 100
    batch_size: int = 20
    lr: float = 1e-4
    restart_epochs: int = 5
    tau: float | None = None
    in_batch_negatives: bool = False
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    skip_unusable: bool = False
    half: bool = False  # store the encoder checkpoint in fp16 (half the size)

    @property
    def temperature(self) -> float:
        return default_tau(self.batch_size) if self.tau is None else float(self.tau)


class PolyCLNet(nn.Module):
    """g(f(x)): (N, 1, H, W) slices -> (N, proj_dim) embeddings (from the deepest feature map)."""

    def __init__(self, encoder: nn.Module, proj_dim: int = 256) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ProjectionHead(encoder.channels[-1], proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)[-1])


class TripletDataset(Dataset):
    """Item k: (anchor, positive, negative) images, each (1, H, W), and their slice indices (3,)."""

    def __init__(self, data: SliceDataset, sampler: TripletSampler, anchors: np.ndarray) -> None:
        self.data, self.sampler, self.anchors, self.epoch = data, sampler, np.asarray(anchors), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.anchors)

    def __getitem__(self, k: int):
        a = int(self.anchors[k])
        p, n = self.sampler.draw(a, self.epoch)
        im = self.data.images
        return im[a], im[p], im[n], torch.tensor([a, p, n])


@dataclass
class PretrainResult:
    encoder_path: Path
    state_path: Path
    curve_path: Path
    history: list
    plan: SamplingPlan
    epochs_done: int
    rank_digests: list
    seconds: float


def companion_paths(output: str | os.PathLike) -> tuple[Path, Path]:
    """(training-state file, loss-curve PNG) beside the encoder checkpoint ``output``."""
    out = Path(output)
    stem = out.name[:-3] if out.name.endswith(".pt") else out.name
    return out.with_name(stem + ".state.pt"), out.with_name(stem + ".loss.png")


class PretrainJob(Job):
    """PolyCL pre-training as a job of :func:`polycl.training.fit`: g(f(x)) on (anchor, positive,
    negative) triplets; writes the encoder checkpoint and the loss curve after every epoch."""

    kind = "pre-training"

    def __init__(self, data: SliceDataset, sampler: TripletSampler, plan: SamplingPlan, cfg: PretrainConfig,
                 output: Path, log: Callable[[str], None]) -> None:
        self.data, self.sampler, self.plan, self.cfg, self.output, self.say = data, sampler, plan, cfg, output, log
        self.digests: list[str] = []

    def build(self, info: D.DistInfo, device: torch.device) -> None:
        cfg = self.cfg
        self.info, self.device = info, device
        torch.manual_seed(cfg.seed)
        self.encoder_cfg = dict(cfg.encoder)
        self.net = PolyCLNet(build_encoder(self.encoder_cfg), cfg.proj_dim).to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(self.optimizer, T_0=cfg.restart_epochs)
        self.use_amp = bool(cfg.amp and device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.triplets = TripletDataset(self.data, self.sampler, self.plan.anchors)
        self.batches_sampler = GlobalBatchSampler(len(self.triplets), cfg.batch_size, seed=cfg.seed, rank=info.rank,
                                           world_size=info.world_size)
        self.loader = DataLoader(self.triplets, batch_sampler=self.batches_sampler, num_workers=0)
        self.head_config = {"in_channels": self.net.encoder.channels[-1], "out_dim": cfg.proj_dim}
        self.meta = {
            "strategy": cfg.strategy, "strategy_description": DESCRIPTIONS[cfg.strategy],
            "data": self.data.describe(), "plan": self.plan.to_json(), "preprocess": self.data.preprocess.to_dict(),
            "batch_size": cfg.batch_size, "lr": cfg.lr, "tau": cfg.temperature,
            "in_batch_negatives": cfg.in_batch_negatives, "restart_epochs": cfg.restart_epochs, "seed": cfg.seed,
            "world_size": info.world_size, "head": self.head_config,
            "state_file": companion_paths(self.output)[0].name,
            "amp": str(self.amp_dtype).replace("torch.", "") if self.use_amp else "off",
        }

    def settings(self) -> dict:
        now = asdict(self.cfg)
        keys = ("strategy", "encoder", "proj_dim", "batch_size", "seed", "lr", "restart_epochs", "tau",
                "in_batch_negatives")
        return dict({k: now[k] for k in keys}, data=[[s["case"], s["slices"]] for s in self.data.summary()])

    def batches(self, epoch: int) -> DataLoader:
        self.triplets.set_epoch(epoch)  # draws and order keyed by the epoch (1-based), as fine-tuning's
        self.batches_sampler.set_epoch(epoch)
        return self.loader

    def loss(self, model, batch) -> tuple[torch.Tensor, float]:
        a, p, n, _idx = batch
        x = torch.cat([a, p, n]).to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            z = model(x)
        za, zp, zn = (gather(t, self.info) for t in z.float().split(a.shape[0]))  # the global batch
        loss = polycl_loss(za, zp, zn, self.cfg.temperature, in_batch_negatives=self.cfg.in_batch_negatives)
        return loss * self.info.world_size, float(loss.detach())

    def end_epoch(self, epoch: int, record: dict) -> dict:
        self.digests = D.gather_digests(self.info, D.weights_digest(self.net))
        return {}

    def write(self, epoch: int, history: list[dict]) -> None:
        cfg, curve = self.cfg, companion_paths(self.output)[1]
        meta = dict(self.meta, epochs=epoch, epochs_planned=cfg.epochs,
                    loss_history=[{k: h[k] for k in ("epoch", "loss", "lr", "seconds")} for h in history],
                    rank_weight_sha256=self.digests, ranks_identical=len(set(self.digests)) == 1)
        save_checkpoint(self.output, self.net.encoder, self.encoder_cfg, kind="encoder", meta=meta, half=cfg.half)
        plot_history(history, curve, series={"loss": "epoch mean"}, step_key="step_losses", ylabel="PolyCL loss",
                     hline=(math.log(2), "log 2 (chance)"),
                     title=f"PolyCL-{cfg.strategy.upper()} {self.encoder_cfg.get('name', 'unet')} pre-training, "
                           f"{len(self.data)} slices, {self.data.preprocess.size} px")
        h = history[-1]
        self.say(f"epoch {epoch}/{cfg.epochs}: loss {h['loss']:.4f}, lr {h['lr']:.2e}, {h['seconds']:.1f} s")

    def extra_state(self) -> dict:
        return {"encoder_config": self.encoder_cfg, "head_config": self.head_config}

    def log(self, message: str) -> None:
        self.say(message)


def pretrain(data: SliceDataset, output: str | os.PathLike, config: PretrainConfig | None = None, *,
             resume: bool = False, progress: Progress | None = None, cancel: CancelToken | None = None,
             log: Callable[[str], None] | None = print) -> PretrainResult:
    """Pre-train an encoder on ``data`` with ``config``; see the module docstring for the outputs.

    ``progress(epochs_done, epochs, message)`` after every step (rank 0 only under torchrun); a
    cancelled ``cancel`` token stops the run with :class:`~polycl.errors.Cancelled` (the last
    completed epoch stays on disk and can be resumed). ``log`` gets one line per finished epoch.
    The strategy is checked against the data before anything is built or written.
    """
    t_start = time.time()
    cfg = config or PretrainConfig()
    output = Path(output)
    state_path, curve_path = companion_paths(output)
    say = log if (log and D.from_env().is_main) else (lambda _m: None)
    sampler = TripletSampler(data.scan, data.presence, cfg.strategy, cfg.seed, data.case_names)
    plan = sampler.plan(skip_unusable=cfg.skip_unusable)  # refuses impossible strategies before training
    for line in plan.lines():
        say(line)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise InputError("epochs and batch size must be at least 1")
    if resume and not state_path.is_file():
        raise InputError(f"--resume: no training state at {state_path}; run without --resume to start")
    job = PretrainJob(data, sampler, plan, cfg, output, say)
    run = fit(job, epochs=cfg.epochs, state_path=state_path, device=cfg.device, resume=resume,
              progress=progress, cancel=cancel)
    return PretrainResult(output, state_path, curve_path, run.history, plan, len(run.history), job.digests,
                          time.time() - t_start)


def load_pretrained_head(state_path: str | os.PathLike) -> tuple[nn.Module, nn.Module]:
    """(encoder, projection head) from a pre-training state file, e.g. to inspect embeddings."""
    state = read_state(state_path, PretrainJob.kind)
    extra = state["extra"]
    net = PolyCLNet(build_encoder(extra["encoder_config"]), extra["head_config"]["out_dim"])
    load_state_strict(net, state["model"], str(state_path))
    return net.encoder.eval(), net.head.eval()
