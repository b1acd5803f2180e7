"""Choosing the torch device: ``auto`` picks CUDA when present, else CPU."""

from __future__ import annotations

from typing import Callable, TypeVar

import torch

from polycl.errors import InputError

T = TypeVar("T")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") or name == "gpu":
        if not torch.cuda.is_available():
            raise InputError("a GPU (cuda) was asked for, but torch sees none; use --device cpu or auto")
        return torch.device("cuda" if name == "gpu" else name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device '{name}'; use auto, cpu or cuda")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a GPU (or CPU allocator) out-of-memory error from torch."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def retry_on_oom(run: Callable[[int], T], batch_size: int, *, shrink: int = 4) -> T:
    """``run(batch_size)``; on out-of-memory, free torch's CUDA cache and retry with the batch
    divided by ``shrink`` (down to 1, where the error is raised). A smaller batch gives the same
    result (inference is per slice), only slower."""
    import logging

    batch = max(1, int(batch_size))
    while True:
        try:
            return run(batch)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not is_out_of_memory(exc) or batch <= 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            batch = max(1, batch // shrink)
            logging.getLogger("polycl").warning("out of memory; retrying with batch size %d", batch)
