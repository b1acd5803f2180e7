"""Choosing the torch device: ``auto`` picks CUDA when present, else CPU."""

from __future__ import annotations

import torch

from polycl.errors import InputError


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
