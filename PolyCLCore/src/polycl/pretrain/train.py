"""The PolyCL pre-training loop.

Encoder f + projection head g (global average pool + linear, 256-d) are trained with the PolyCL
loss on (anchor, positive, negative) slice triplets chosen by the strategy (S, O or M). Defaults
are the paper's: Adam, lr 1e-4, 20 anchors per minibatch, cosine annealing with warm restarts every
5 epochs (stepped per iteration), tau = 1 / minibatch size; mixed precision on a GPU.

Every epoch, rank 0 writes (each atomically):

* ``output`` (e.g. ``encoder.pt``): the encoder only, as a ``kind="encoder"`` checkpoint that
  :func:`polycl.finetune` loads (``build_encoder(ckpt["config"])`` + strict weights); its ``meta``
  holds the strategy, epochs, data, plan, loss history and the head's *config*;
* ``<output stem>.state.pt``: the training state for ``resume`` (encoder, projection head,
  optimizer, scheduler, scaler, epoch, history). The head's weights live only here, so fine-tuning
  never sees them;
* ``<output stem>.loss.png``: the loss curve.

Under ``torchrun`` it runs as DistributedDataParallel (see :mod:`polycl.distributed`);
``batch_size`` is per process and tau defaults to 1 / ``batch_size``. Each epoch the ranks compare
SHA-256 digests of their weights and rank 0 records them in the checkpoint's meta.
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
from torch.utils.data.distributed import DistributedSampler

from polycl.atomic import atomic_path
from polycl.checkpoint import FORMAT, atomic_torch_save, read_checkpoint, save_checkpoint
from polycl.errors import InputError
from polycl.progress import CancelToken, Progress, Reporter
from polycl.networks import ProjectionHead, build_encoder
from polycl import distributed as D
from polycl.pretrain.dataset import SliceDataset
from polycl.pretrain.loss import default_tau, polycl_loss
from polycl.pretrain.samplers import DESCRIPTIONS, SamplingPlan, TripletSampler


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


def plot_loss_curve(history: list[dict], step_losses: list[list[float]], path: Path, title: str) -> Path:
    """Loss per step (thin) and per-epoch mean (dots) against epoch; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    xs, ys = [], []
    for e, losses in enumerate(step_losses):
        n = max(1, len(losses))
        xs += [e + (i + 1) / n for i in range(len(losses))]
        ys += losses
    if ys:
        ax.plot(xs, ys, lw=0.7, alpha=0.5, label="per step (rank 0)")
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], "o-", ms=3, label="epoch mean")
    ax.axhline(math.log(2), color="grey", ls=":", lw=0.8, label="log 2 (chance)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("PolyCL loss")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _check_resume(state: dict, cfg: PretrainConfig, data: SliceDataset) -> None:
    old = state.get("pretrain_config", {})
    for key in ("strategy", "encoder", "proj_dim", "batch_size", "seed", "lr", "restart_epochs", "tau", "in_batch_negatives"):
        if key in old and old[key] != asdict(cfg)[key]:
            raise InputError(f"cannot resume: the saved run used {key}={old[key]!r}, this one {asdict(cfg)[key]!r}; "
                             "use the same settings or start a new run (without --resume / another output)")
    saved = [(s["case"], s["slices"]) for s in state.get("meta", {}).get("data", {}).get("scans", [])]
    now = [(s["case"], s["slices"]) for s in data.summary()]
    if saved and saved != now:
        raise InputError(f"cannot resume: the data differ from the saved run's ({saved} vs {now})")


def pretrain(data: SliceDataset, output: str | os.PathLike, config: PretrainConfig = PretrainConfig(), *,
             resume: bool = False, progress: Progress | None = None, cancel: CancelToken | None = None,
             log: Callable[[str], None] | None = print) -> PretrainResult:
    """Pre-train an encoder on ``data`` with ``config``; see the module docstring for the outputs.

    ``progress(steps_done, steps, message)`` after every step (rank 0 only under torchrun); a
    cancelled ``cancel`` token stops the run with :class:`~polycl.errors.Cancelled` (the last
    completed epoch stays on disk and can be resumed). ``log`` gets one line per finished epoch.
    The strategy is checked against the data before anything is built or written.
    """
    from polycl.device import resolve_device

    t_start = time.time()
    cfg = config
    output = Path(output)
    state_path, curve_path = companion_paths(output)
    device = resolve_device(cfg.device)
    info = D.setup(device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    say = (log if (log and info.is_main) else (lambda _m: None))

    sampler = TripletSampler(data.scan, data.presence, cfg.strategy, cfg.seed, data.case_names)
    plan = sampler.plan(skip_unusable=cfg.skip_unusable)  # refuses impossible strategies before training
    for line in plan.lines():
        say(line)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise InputError("epochs and batch size must be at least 1")

    torch.manual_seed(cfg.seed)
    encoder_cfg = dict(cfg.encoder)
    net = PolyCLNet(build_encoder(encoder_cfg), cfg.proj_dim).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=cfg.restart_epochs)
    use_amp = bool(cfg.amp and device.type == "cuda")
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

    history: list[dict] = []
    step_losses: list[list[float]] = []
    start_epoch = 0
    if resume:
        if not state_path.is_file():
            raise InputError(f"--resume: no training state at {state_path}; run without --resume to start")
        state = read_checkpoint(state_path, kind="training-state")
        _check_resume(state, cfg, data)
        net.encoder.load_state_dict(state["state_dict"])
        net.head.load_state_dict(state["head_state_dict"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"])
        history = list(state["meta"].get("loss_history", []))
        step_losses = [list(x) for x in state["meta"].get("step_losses", [])]
        say(f"resuming after epoch {start_epoch} from {state_path}")
        if start_epoch >= cfg.epochs:
            say(f"already trained {start_epoch} epochs (asked for {cfg.epochs}); nothing to do")

    model: nn.Module = net
    if info.enabled:
        model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)

    triplets = TripletDataset(data, sampler, plan.anchors)
    dsampler = DistributedSampler(triplets, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed)
    loader = DataLoader(triplets, batch_size=cfg.batch_size, sampler=dsampler, num_workers=0)
    steps = len(loader)
    tau = cfg.temperature
    digests: list[str] = []
    base_meta = {
        "strategy": cfg.strategy, "strategy_description": DESCRIPTIONS[cfg.strategy],
        "data": data.describe(), "plan": plan.to_json(), "preprocess": data.preprocess.to_dict(),
        "batch_size": cfg.batch_size, "lr": cfg.lr, "tau": tau, "in_batch_negatives": cfg.in_batch_negatives,
        "restart_epochs": cfg.restart_epochs, "seed": cfg.seed, "world_size": info.world_size,
        "head": {"in_channels": net.encoder.channels[-1], "out_dim": cfg.proj_dim},
        "state_file": state_path.name, "amp": str(amp_dtype).replace("torch.", "") if use_amp else "off",
    }
    report = Reporter(progress if info.is_main else None, cancel)
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.time()
            model.train()
            triplets.set_epoch(epoch)
            dsampler.set_epoch(epoch)
            losses = []
            report.cancelled_message = (f"pre-training cancelled in epoch {epoch + 1}; "
                                        f"{'the last completed epoch is saved' if epoch else 'nothing was saved'}")
            for step, (a, p, n, _idx) in enumerate(loader):
                report.check()
                x = torch.cat([a, p, n]).to(device, non_blocking=True)
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                    z = model(x)
                za, zp, zn = z.float().split(a.shape[0])
                loss = polycl_loss(za, zp, zn, tau, in_batch_negatives=cfg.in_batch_negatives)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step(epoch + (step + 1) / steps)
                losses.append(float(loss.detach()))
                report(epoch * steps + step + 1, cfg.epochs * steps,
                       f"epoch {epoch + 1}/{cfg.epochs} loss {losses[-1]:.4f}")
            mean = D.all_reduce_mean(info, float(np.mean(losses)), device)
            history.append({"epoch": epoch + 1, "loss": mean, "lr": opt.param_groups[0]["lr"],
                            "seconds": round(time.time() - t0, 2)})
            step_losses.append(losses)
            digests = D.gather_digests(info, D.weights_digest(net))
            if info.is_main:
                meta = dict(base_meta, epochs=epoch + 1, epochs_planned=cfg.epochs, loss_history=history,
                            rank_weight_sha256=digests, ranks_identical=len(set(digests)) == 1)
                save_checkpoint(output, net.encoder, encoder_cfg, kind="encoder", meta=meta, half=cfg.half)
                atomic_torch_save({
                    "format": FORMAT, "kind": "training-state", "config": encoder_cfg,
                    "state_dict": {k: v.detach().cpu() for k, v in net.encoder.state_dict().items()},
                    "head_config": base_meta["head"],
                    "head_state_dict": {k: v.detach().cpu() for k, v in net.head.state_dict().items()},
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "epoch": epoch + 1,
                    "pretrain_config": asdict(cfg), "meta": dict(meta, step_losses=step_losses),
                }, state_path)
                plot_loss_curve(history, step_losses, curve_path,
                                f"PolyCL-{cfg.strategy.upper()} {encoder_cfg.get('name', 'unet')} pre-training, "
                                f"{len(data)} slices, {data.preprocess.size} px")
                say(f"epoch {epoch + 1}/{cfg.epochs}: loss {mean:.4f}, lr {history[-1]['lr']:.2e}, "
                    f"{history[-1]['seconds']:.1f} s")
    finally:
        D.teardown(info)
    return PretrainResult(output, state_path, curve_path, history, plan, len(history), digests, time.time() - t_start)


def load_pretrained_head(state_path: str | os.PathLike) -> tuple[nn.Module, nn.Module]:
    """(encoder, projection head) from a training-state file, e.g. to inspect embeddings."""
    state = read_checkpoint(state_path, kind="training-state")
    encoder = build_encoder(state["config"])
    encoder.load_state_dict(state["state_dict"])
    head = ProjectionHead(state["head_config"]["in_channels"], state["head_config"]["out_dim"])
    head.load_state_dict(state["head_state_dict"])
    return encoder.eval(), head.eval()
