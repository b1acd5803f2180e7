"""Global batches, the same on any number of processes: what makes "resume on any number of
processes: the same steps" true for every training job (fine-tuning and pre-training).

* :class:`GlobalBatchSampler`: per epoch one seeded permutation cut into global batches of
  ``batch_size`` items; rank ``r`` of ``world_size`` takes its contiguous share of each. Steps per
  epoch depend on the data and the batch size only.
* :func:`gather`: a tensor of this rank's share joined with every other rank's, in rank order, this
  rank's part kept differentiable. A loss on the gathered tensors is the global batch's loss; multiply
  it by the world size before ``backward`` so that DDP's gradient average is that loss's gradient.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from polycl import distributed as D
from polycl.errors import InputError


class GlobalBatchSampler(Sampler):
    """Batches of item indices: per epoch a permutation seeded by (seed, epoch), cut into global
    batches; rank ``r`` of ``world_size`` yields its contiguous share of each.

    The global batch is ``batch_size``, or the number of items when there are fewer, rounded down
    to a multiple of ``world_size``; a last incomplete global batch is dropped (when there is more
    than one). Steps per epoch do not depend on the number of ranks, so a state saved by N
    processes resumes on M."""

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.rank, self.world_size, self.epoch = int(n), int(seed), int(rank), int(world_size), 0
        self.global_batch = min(int(batch_size), self.n) // self.world_size * self.world_size
        if self.global_batch < 1:
            raise InputError(f"{n} training item(s) cannot be shared by {world_size} processes "
                             f"(batch size {batch_size}); use fewer processes or more data")
        self.local_batch = self.global_batch // self.world_size

    def set_epoch(self, epoch: int) -> None:
        """The epoch (1-based, as :func:`polycl.training.fit` numbers them) whose permutation to draw."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.global_batch

    def __iter__(self):
        g = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]))
        order = torch.randperm(self.n, generator=g).tolist()
        lo = self.rank * self.local_batch
        for step in range(len(self)):
            batch = order[step * self.global_batch:(step + 1) * self.global_batch]
            yield batch[lo:lo + self.local_batch]


def gather(tensor: torch.Tensor, info: D.DistInfo) -> torch.Tensor:
    """Every rank's ``tensor`` (same shape on each) concatenated along dim 0 in rank order, this
    rank's kept differentiable (the others are constants here: DDP averages their gradients in)."""
    if not info.enabled:
        return tensor
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.detach().contiguous())
    parts[info.rank] = tensor
    return torch.cat(parts)
