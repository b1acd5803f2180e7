"""Checkpoints that carry their own config, load safely and can be checked against a SHA-256.

File layout (a ``torch.save`` dict of plain types and tensors, loadable with ``weights_only=True``)::

    {"format": "polycl/1", "kind": "segmentation" | "encoder" | "training-state",
     "config": {...}, "state_dict": {...}, "meta": {...}}

``config`` rebuilds the network (see :mod:`polycl.networks`); ``meta`` holds provenance (target,
training data, scores, preprocessing).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polycl.atomic import atomic_path
from polycl.errors import ChecksumError, InputError
from polycl.hashing import sha256_file  # noqa: F401  (re-exported: polycl.checkpoint.sha256_file)

FORMAT = "polycl/1"


def verify_sha256(path: str | os.PathLike, expected: str | None) -> str:
    """Return the file's SHA-256; raise :class:`ChecksumError` when it differs from ``expected``."""
    actual = sha256_file(path)
    if expected and actual.lower() != expected.lower():
        raise ChecksumError(
            f"{path}: SHA-256 mismatch (expected {expected}, file has {actual}); the file is corrupt, "
            "truncated or not the registered one. Delete it and download it again."
        )
    return actual


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    with atomic_path(path, ".pt") as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: dict, *, kind: str = "segmentation",
                    meta: dict | None = None, half: bool = False) -> Path:
    """Save ``model``'s weights with ``config``. ``half`` stores floats as fp16 (smaller files)."""
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": FORMAT, "kind": kind, "config": config, "state_dict": state,
                              "meta": dict(meta or {})}, path)


def read_checkpoint(path: str | os.PathLike, *, sha256: str | None = None, kind: str | None = None) -> dict:
    """Load a checkpoint dict safely (``weights_only=True``), verifying its SHA-256 when given."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: checkpoint not found")
    if sha256:
        verify_sha256(p, sha256)
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise InputError(f"{p}: not a readable checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise InputError(f"{p}: not a polycl checkpoint (missing format '{FORMAT}')")
    if kind and ckpt.get("kind") != kind:
        raise InputError(f"{p}: is a '{ckpt.get('kind')}' checkpoint, expected '{kind}'")
    return ckpt


def load_state_strict(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> nn.Module:
    """Load weights with strict key matching, casting to the model's dtypes; clear error otherwise."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise InputError(f"{source}: weights do not fit the network (missing {missing[:5]}, unexpected {unexpected[:5]})")
    cast = {k: v.to(own[k].dtype) for k, v in state_dict.items()}
    model.load_state_dict(cast, strict=True)
    return model


def load_segmentation_model(path: str | os.PathLike, *, sha256: str | None = None) -> tuple[nn.Module, dict]:
    """Build the segmentation U-Net stored at ``path``; returns (model in eval mode, checkpoint dict)."""
    from polycl.networks import build_segmentation_model

    ckpt = read_checkpoint(path, sha256=sha256, kind="segmentation")
    model = build_segmentation_model(ckpt["config"])
    load_state_strict(model, ckpt["state_dict"], str(path))
    return model.eval(), ckpt

