"""The one training loop: epochs of optimiser steps, a resumable state, DDP, progress and cancel.

A :class:`Job` says what is trained (network, optimiser, scheduler, batches, loss, what an epoch
adds to the history and which files it writes); :func:`fit` runs it:

* **Process group**: joined on entry (``torchrun``: DistributedDataParallel over the job's
  network, NCCL on GPUs, gloo on the CPU) and left in a ``finally`` (:func:`polycl.distributed.session`),
  whether training finished, failed or was cancelled.
* **Epochs** are numbered from 1: ``history[i]["epoch"] == i + 1``, messages say "epoch 2/5", and
  the state's ``epoch`` is the number of finished epochs (the last one's number).
* **Resumable state** (rank 0, atomically, after every epoch), one format for every job::

      {"format": "polycl/1", "kind": "training-state", "job": "fine-tuning" | "pre-training",
       "epoch": epochs finished, "model": the job's network (state dict), "optimizer", "scheduler",
       "scaler" (AMP grad scaler, {} when off), "rng": torch's CPU RNG state, "history": [...],
       "settings": what must match to resume, "world_size": processes that wrote it,
       "extra": the job's own (best epoch, head config, per-step losses...)}

  ``resume`` checks the job kind and the settings, restores everything and continues with the
  next epoch, on any number of processes: the same steps as a run that was never interrupted.
* **Progress and cancel** (:mod:`polycl.progress`): ``progress`` after every step and every epoch
  (rank 0 only); the cancel token is checked before every step, so a cancelled run never changes
  the weights of a saved epoch. Cancel or Ctrl-C raises :class:`~polycl.errors.Cancelled` saying
  whether there is something to resume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from polycl import distributed as D
from polycl.checkpoint import FORMAT, atomic_torch_save, load_state_strict, read_checkpoint
from polycl.errors import Cancelled, InputError
from polycl.progress import CancelToken, Progress, Reporter


class Job:
    """What one kind of training supplies to :func:`fit`. Subclasses set ``kind`` and, in
    :meth:`build`, ``net``, ``optimizer`` and ``scheduler`` (``scaler`` for AMP with fp16)."""

    kind = "training"
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None

    def build(self, info: D.DistInfo, device: torch.device) -> None:
        """Make the network (same initial weights on every rank), optimiser, scheduler and data."""
        raise NotImplementedError

    def settings(self) -> dict:
        """Plain values that must be the same to resume (checked key by key)."""
        return {}

    def batches(self, epoch: int) -> Iterable:
        """This rank's batches of ``epoch`` (1-based; samplers are keyed by it); ``len()`` must work and
        must not depend on the number of processes (:class:`polycl.training.batches.GlobalBatchSampler`)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch) -> tuple[torch.Tensor, float]:
        """(tensor to back-propagate, loss value to report) for one batch; ``model`` may be the DDP wrapper."""
        raise NotImplementedError

    def after_step(self, epoch: int, step: int, steps: int) -> None:
        """After each optimiser step (``step`` 0-based): the scheduler steps to the fractional epoch
        reached (``epoch - 1 + (step + 1) / steps``), so a schedule in epochs (warm restarts every
        N epochs) is the same whatever the steps per epoch, and a resumed run continues it exactly."""
        self.scheduler.step(epoch - 1 + (step + 1) / steps)

    def end_epoch(self, epoch: int, record: dict) -> dict:
        """On every rank after an epoch (collectives allowed): more fields for the history record."""
        return {}

    def summary(self, record: dict) -> str:
        return f"loss {record['loss']:.4f}"

    def write(self, epoch: int, history: list[dict]) -> None:
        """Rank 0, after the state is saved: the job's files (checkpoint, curve...)."""

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, extra: dict) -> None:
        pass

    def log(self, message: str) -> None:
        pass


@dataclass
class FitResult:
    history: list[dict]
    info: D.DistInfo
    device: torch.device
    state_path: Path


def read_state(path: str | Path, kind: str | None = None) -> dict:
    """A training state written by :func:`fit` (``kind``: the job it must come from)."""
    try:
        state = read_checkpoint(path, kind="training-state")
    except InputError as exc:
        raise InputError(f"{exc}; it was not written by this version's training loop: start a new run") from None
    if "job" not in state:
        raise InputError(f"{path}: a training state of an older polycl (before one training loop); start a new run")
    if kind and state["job"] != kind:
        raise InputError(f"{path}: holds a {state['job']} state, not {kind}")
    return state


def _check_settings(saved: dict, now: dict) -> None:
    for key in now:
        if key in saved and saved[key] != now[key]:
            raise InputError(f"cannot resume: the saved run used {key}={saved[key]!r}, this one {now[key]!r}; "
                             "use the same settings or start a new run (without --resume / another output)")


def _save_state(job: Job, scaler: torch.amp.GradScaler, epoch: int, history: list[dict], info: D.DistInfo,
                path: Path) -> None:
    atomic_torch_save({
        "format": FORMAT, "kind": "training-state", "job": job.kind, "epoch": epoch,
        "model": {k: v.detach().cpu() for k, v in job.net.state_dict().items()},
        "optimizer": job.optimizer.state_dict(), "scheduler": job.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else {}, "rng": torch.get_rng_state(),
        "history": history, "settings": job.settings(), "world_size": info.world_size, "extra": job.extra_state(),
    }, path)


def _resume(job: Job, scaler: torch.amp.GradScaler, path: Path) -> list[dict]:
    if not path.is_file():
        raise InputError(f"{path}: nothing to resume (no saved training state); run without --resume to start")
    state = read_state(path, job.kind)
    _check_settings(state.get("settings", {}), job.settings())
    load_state_strict(job.net, state["model"], str(path))
    job.optimizer.load_state_dict(state["optimizer"])
    job.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    job.load_extra_state(state.get("extra", {}))
    history = list(state["history"])
    job.log(f"resuming after epoch {state['epoch']} from {path}")
    return history


def fit(job: Job, *, epochs: int, state_path: str | Path, device: str | torch.device = "auto", resume: bool = False,
        progress: Progress | None = None, cancel: CancelToken | None = None) -> FitResult:
    """Train ``job`` up to epoch ``epochs`` (see the module docstring); returns the whole history."""
    state_path = Path(state_path)
    dev = D.rank_device(device, D.from_env())
    with D.session(dev) as info:
        job.build(info, dev)
        scaler = job.scaler or torch.amp.GradScaler("cuda", enabled=False)
        history = _resume(job, scaler, state_path) if resume else []
        if len(history) >= epochs:
            job.log(f"already trained {len(history)} epochs (asked for {epochs}); nothing to do")
        model = job.net
        if info.enabled:
            model = nn.parallel.DistributedDataParallel(job.net, device_ids=[dev.index] if dev.type == "cuda" else None)
        report = Reporter(progress if info.is_main else None, cancel)
        try:
            for epoch in range(len(history) + 1, epochs + 1):
                history.append(_epoch(job, model, scaler, epoch, epochs, report, info, dev))
                if info.is_main:
                    _save_state(job, scaler, epoch, history, info, state_path)
                    job.write(epoch, history)
                report(epoch, epochs, f"epoch {epoch}/{epochs}: {job.summary(history[-1])}")
        except (KeyboardInterrupt, Cancelled):  # the state on disk holds the last finished epoch
            if not history:
                raise Cancelled(f"{job.kind} stopped during its first epoch; nothing to resume") from None
            raise Cancelled(f"{job.kind} stopped after epoch {history[-1]['epoch']}; "
                            f"resume with --resume (state in {state_path})") from None
    return FitResult(history, info, dev, state_path)


def _epoch(job: Job, model: nn.Module, scaler: torch.amp.GradScaler, epoch: int, epochs: int, report: Reporter,
           info: D.DistInfo, device: torch.device) -> dict:
    """One epoch of optimiser steps; returns its history record."""
    t0, losses = time.perf_counter(), []
    model.train()
    batches = job.batches(epoch)
    steps = len(batches)
    for step, batch in enumerate(batches):
        report.check()  # before the step: a cancelled run never changes the weights of a saved epoch
        loss, value = job.loss(model, batch)
        job.optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(job.optimizer)
        scaler.update()
        job.after_step(epoch, step, steps)
        losses.append(value)
        report(epoch - 1 + (step + 1) / steps, epochs, f"epoch {epoch}/{epochs} step {step + 1}/{steps} loss {value:.4f}")
    record = {"epoch": epoch, "loss": D.all_reduce_mean(info, float(np.mean(losses)), device),
              "lr": job.optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 2),
              "step_losses": losses}
    record.update(job.end_epoch(epoch, record))
    return record
