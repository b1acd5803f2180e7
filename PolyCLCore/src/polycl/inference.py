"""Slice-wise inference of a segmentation U-Net on a CT volume, in the volume's own geometry.

:func:`predict_probabilities`: a canonical (LPS, :mod:`polycl.orientation`) HU array -> window/scale/resize
slices to the model's size -> batched forward passes -> sigmoid probabilities resized back to native
slice size (bilinear). Thresholding, the largest-component clean-up and the way back to the input
grid are Segment's (:func:`polycl.segment.run`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from polycl.checkpoint import load_segmentation_model
from polycl.device import resolve_device
from polycl.models import ModelEntry, resolve_model
from polycl.progress import CancelToken, Progress, Reporter
from polycl.preprocess import PreprocessConfig, from_model_grid, prepare_slices


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

