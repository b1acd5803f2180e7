"""Multi-GPU / multi-node pre-training with ``torchrun`` (DistributedDataParallel).

Under ``torchrun`` (which sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``)
:func:`setup` joins the process group: NCCL when the process has a GPU, gloo on CPU. Each rank
then trains on its share of the anchors (``DistributedSampler``); DDP averages gradients, so all
ranks keep identical weights. Rank 0 writes checkpoints, curves and logs.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

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


def setup(device: torch.device) -> DistInfo:
    """Join the process group when started by torchrun; returns this process's :class:`DistInfo`."""
    info = from_env()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend=backend)
    return info


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


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
    if not info.enabled:
        return [digest]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, digest)
    return [str(d) for d in out]


def all_reduce_mean(info: DistInfo, value: float, device: torch.device) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size
