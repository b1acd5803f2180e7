"""Several processes, GPUs or nodes with ``torchrun``: the helpers every distributed job shares.

Under ``torchrun`` (which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``,
``MASTER_ADDR``/``PORT``; SLURM's ``srun torchrun ...`` and Kubernetes launchers set them too)
:func:`setup` joins the process group: NCCL when the process trains on a GPU, gloo on the CPU (and
for jobs that exchange only small control messages, such as batch segmentation). Without
torchrun every helper degrades to the single-process case.

Users: pre-training and fine-tuning (DistributedDataParallel: each rank trains on its share of
every global batch, gradients are averaged, rank 0 writes checkpoints) and batch segmentation
(each rank segments its share of the cases; rank 0 merges the reports).
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    """Rank and world size from the torchrun environment (a single process otherwise)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def setup(device: torch.device, backend: str | None = None) -> DistInfo:
    """Join the process group when started by torchrun; returns this process's :class:`DistInfo`.

    ``backend``: default NCCL for a CUDA ``device``, else gloo. On the CPU each rank gets an equal
    share of the machine's cores as torch threads (two ranks on a 2-core machine: one thread each)."""
    info = from_env()
    if info.enabled and not dist.is_initialized():
        backend = backend or ("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        else:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local)))
        dist.init_process_group(backend=backend)
    return info


def rank_device(device: str | torch.device, info: DistInfo) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` when ``device`` resolves to CUDA, else as given."""
    from polycl.device import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return dev


def shard(items: list, info: DistInfo) -> list:
    """This rank's share of ``items``: every ``world_size``-th item from position ``rank`` (a
    deterministic split of a sorted list: each item on exactly one rank, shares differ by <= 1)."""
    return list(items[info.rank::info.world_size])


def gather_objects(info: DistInfo, obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order (``[obj]`` without a process group)."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def teardown(info: DistInfo, *, wait: bool = True) -> None:
    """Leave the process group (after a barrier when ``wait``: every rank got this far)."""
    if info.enabled and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def session(device: torch.device, backend: str | None = None) -> Iterator[DistInfo]:
    """:func:`setup` on entry, :func:`teardown` on exit, also when the body raises or is cancelled.

    On an error there is no final barrier (the other ranks may never reach it): the group is
    destroyed at once, so a failed or cancelled rank never hangs and never leaks its group."""
    info = setup(device, backend)
    ok = False
    try:
        yield info
        ok = True
    finally:
        teardown(info, wait=ok)


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 over a module's parameters and buffers (name, dtype, shape, bytes), in fp32 on CPU."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        a = t.detach().to("cpu", torch.float32).contiguous().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
        h.update(name.encode())
        h.update(str(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def gather_digests(info: DistInfo, digest: str) -> list[str]:
    """Every rank's digest, in rank order (just ``[digest]`` without a process group)."""
    return [str(d) for d in gather_objects(info, digest)]


def all_reduce_mean(info: DistInfo, value: float, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size
