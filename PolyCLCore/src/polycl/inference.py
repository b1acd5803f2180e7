"""Slice-wise inference of a segmentation U-Net on a CT volume, in the volume's own geometry.

Pipeline: reorient to LPS (:func:`polycl.preprocess.to_canonical`) -> window/scale/resize slices to
the model's size -> batched forward passes -> sigmoid probabilities resized back to native slice
size (bilinear) -> threshold -> optional largest-component clean-up -> original orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from polycl.checkpoint import load_segmentation_model
from polycl.device import resolve_device
from polycl.models import ModelEntry, resolve_model
from polycl.masks import largest_components
from polycl.progress import CancelToken, Progress, Reporter
from polycl.preprocess import (PreprocessConfig, canonical_spacing, from_canonical, from_model_grid, prepare_slices,
                               to_canonical)
from polycl.validate import require_ct
from polycl.volume import Volume


@dataclass
class LoadedModel:
    """A segmentation network ready to run, with what it needs to know about its inputs."""

    network: nn.Module
    entry: ModelEntry
    preprocess: PreprocessConfig
    target: str
    components: int  # connected components to keep (1 liver, 2 kidneys)
    device: torch.device


def load_model(name_or_path: str | None = None, device: str | torch.device = "auto") -> LoadedModel:
    entry = resolve_model(name_or_path)
    network, ckpt = load_segmentation_model(entry.path, sha256=entry.sha256)
    meta = ckpt.get("meta", {})
    dev = resolve_device(device)
    return LoadedModel(
        network=network.to(dev).eval(), entry=entry,
        preprocess=PreprocessConfig(**meta.get("preprocess", {})),
        target=meta.get("target", entry.target), components=int(meta.get("components", 1)), device=dev)


@torch.inference_mode()
def predict_probabilities(model: LoadedModel, hu_zyx: np.ndarray, *, batch_size: int = 16,
                          progress: Progress | None = None, cancel: CancelToken | None = None,
                          spacing_yx: tuple[float, float] | None = None) -> np.ndarray:
    """Organ probability (z, y, x) float32 for a canonical-orientation HU array.

    ``spacing_yx`` (mm of rows and columns) is required by models trained with in-plane spacing
    normalisation (``preprocess.pixel_mm``). ``progress``/``cancel``: :mod:`polycl.progress`
    (slices done of z)."""
    report = Reporter(progress, cancel, cancelled_message="segmentation cancelled; nothing was changed")
    if model.preprocess.pixel_mm is not None and spacing_yx is None:
        raise ValueError(f"model {model.entry.name} normalises pixel spacing: give spacing_yx")
    z, y, x = hu_zyx.shape
    out = np.empty((z, y, x), dtype=np.float32)
    use_amp = model.device.type == "cuda"
    for start in range(0, z, batch_size):
        stop = min(z, start + batch_size)
        batch = prepare_slices(hu_zyx[start:stop], model.preprocess, spacing_yx).to(model.device)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits = model.network(batch)
        prob = from_model_grid(torch.sigmoid(logits.float()), model.preprocess, spacing_yx, (y, x))
        out[start:stop] = prob[:, 0].cpu().numpy()
        report(stop, z, "U-Net")
    return out


def segment_volume(volume: Volume, model: LoadedModel | str | None = None, *, threshold: float = 0.5,
                   largest_cc: bool = True, batch_size: int = 16, check_ct: bool = True,
                   progress: Progress | None = None, cancel: CancelToken | None = None) -> np.ndarray:
    """Segment ``volume`` (HU) and return a uint8 (z, y, x) mask on the volume's own grid."""
    if check_ct:
        require_ct(volume)
    if not isinstance(model, LoadedModel):
        model = load_model(model)
    canonical = to_canonical(volume)
    sx, sy, _ = canonical_spacing(volume)
    prob = predict_probabilities(model, canonical, batch_size=batch_size, progress=progress, cancel=cancel,
                                 spacing_yx=(sy, sx))
    mask = (prob >= threshold).astype(np.uint8)
    if largest_cc and mask.any():
        mask = largest_components(mask, keep=model.components, min_fraction=0.2)
    return from_canonical(mask, volume)
