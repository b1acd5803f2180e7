"""The paper's preprocessing: HU window, 0..1 scaling, 256x256 slices, middle-slice selection.

Slices go to the model's ``size`` x ``size`` grid in one of two ways (:class:`PreprocessConfig`):

* ``pixel_mm=None`` (the paper's, and the first starter models'): the whole slice is resized to
  ``size`` x ``size``, whatever its field of view, so a 366 mm and a 500 mm field of view show the
  same organ at different sizes;
* ``pixel_mm`` set (in-plane spacing normalisation): each slice is resampled to ``pixel_mm`` mm per
  pixel and centre-padded (air) or centre-cropped to ``size`` x ``size``; the model then sees every
  organ at its physical size, a field of view of ``size * pixel_mm`` mm.

All functions take and return (z, y, x) arrays. Slices are axial after :func:`to_canonical`, which
reorients any volume to LPS index order (a permutation/flip only, no interpolation), so a model
always sees the same anatomy the same way up, whatever the file's direction matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from polycl.orientation import CANONICAL, orientation
from polycl.volume import Volume

__all__ = ["CANONICAL", "CT_WINDOW", "PreprocessConfig", "canonical_spacing", "from_canonical", "from_model_grid",
           "middle_slices", "prepare_slices", "resize_slices", "to_canonical", "to_model_grid", "window"]

#: The CT window (level, width) in HU that every model here sees: -160..240 HU, the soft-tissue
#: window of the paper and of MedSAM/LiteMedSAM's CT training data (liver, kidneys, lesions). The
#: U-Nets, SAM and SAM 2 frames all take it from here.
CT_WINDOW = (40.0, 400.0)


@dataclass(frozen=True)
class PreprocessConfig:
    """Window (HU), slice size (px) and optional in-plane pixel size (mm). Defaults are the paper's:
    level 40, width 400, 256x256, no spacing normalisation."""

    level: float = CT_WINDOW[0]
    width: float = CT_WINDOW[1]
    size: int = 256
    pixel_mm: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def window(hu: np.ndarray, level: float = CT_WINDOW[0], width: float = CT_WINDOW[1]) -> np.ndarray:
    """Clip HU to [level - width/2, level + width/2] and scale to 0..1 (float32)."""
    lo = level - width / 2.0
    out = (hu.astype(np.float32) - lo) / float(width)
    return np.clip(out, 0.0, 1.0, out=out)


def to_canonical(volume: Volume) -> np.ndarray:
    """The volume's array reoriented to LPS index order: axis 0 inferior->superior, axis 1
    anterior->posterior, axis 2 right->left (the usual radiological axial view). A permutation and
    flips of the axes (:class:`polycl.orientation.Orientation`); an LPS volume's own array is returned."""
    return orientation(volume).to_canonical(volume.array)


def from_canonical(array: np.ndarray, volume: Volume) -> np.ndarray:
    """Inverse of :func:`to_canonical`: put a canonical-order array back on ``volume``'s grid."""
    return orientation(volume).from_canonical(array)


def resize_slices(slices: torch.Tensor, size: int | tuple[int, int], *, mode: str = "bilinear") -> torch.Tensor:
    """Resize (N, C, H, W) slices to ``size``. Bilinear for images/probabilities, 'nearest' for labels."""
    if isinstance(size, int):
        size = (size, size)
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(slices, size=size, mode=mode, **kwargs)


def canonical_spacing(volume: Volume) -> tuple[float, float, float]:
    """(sx, sy, sz) in mm of :func:`to_canonical`'s array (x = axis 2, y = axis 1, z = axis 0)."""
    return orientation(volume).spacing_xyz


def _resampled_shape(shape_yx: tuple[int, int], spacing_yx: tuple[float, float], pixel_mm: float) -> tuple[int, int]:
    return tuple(max(1, int(round(n * s / pixel_mm))) for n, s in zip(shape_yx, spacing_yx))


def _fit(n: int, size: int) -> tuple[int, int, int]:
    """Centre (pad or crop) a length ``n`` into ``size``: (source start, target start, length copied).

    Written here rather than MONAI's ResizeWithPadOrCrop because the inverse must use the very same
    offsets: MONAI pads an odd difference at the end but its centre crop starts one pixel later."""
    if n <= size:
        return 0, (size - n) // 2, n
    return (n - size) // 2, 0, size


def to_model_grid(slices: torch.Tensor, config: PreprocessConfig, spacing_yx: tuple[float, float] | None = None, *,
                  mode: str = "bilinear", fill: float = 0.0) -> torch.Tensor:
    """(N, C, H, W) slices at ``spacing_yx`` mm -> (N, C, size, size) on the model's grid.

    Without ``config.pixel_mm`` (or without a spacing) this is a plain resize; with it, a resample to
    ``pixel_mm`` mm per pixel and a centred pad (``fill``) or crop. :func:`from_model_grid` inverts it.
    """
    if config.pixel_mm is None or spacing_yx is None:
        return resize_slices(slices, config.size, mode=mode)
    h, w = _resampled_shape(tuple(slices.shape[-2:]), spacing_yx, config.pixel_mm)
    resampled = resize_slices(slices, (h, w), mode=mode)
    out = torch.full((*slices.shape[:2], config.size, config.size), float(fill), dtype=slices.dtype)
    (sy, ty, ly), (sx, tx, lx) = _fit(h, config.size), _fit(w, config.size)
    out[..., ty:ty + ly, tx:tx + lx] = resampled[..., sy:sy + ly, sx:sx + lx]
    return out


def from_model_grid(slices: torch.Tensor, config: PreprocessConfig, spacing_yx: tuple[float, float] | None,
                    shape_yx: tuple[int, int], *, fill: float = 0.0) -> torch.Tensor:
    """Inverse of :func:`to_model_grid` for model outputs: (N, C, size, size) -> (N, C, H, W), bilinear.
    Parts of the slice that were cropped away get ``fill``."""
    if config.pixel_mm is None or spacing_yx is None:
        return resize_slices(slices, shape_yx)
    h, w = _resampled_shape(tuple(shape_yx), spacing_yx, config.pixel_mm)
    canvas = torch.full((*slices.shape[:2], h, w), float(fill), dtype=slices.dtype, device=slices.device)
    (sy, ty, ly), (sx, tx, lx) = _fit(h, config.size), _fit(w, config.size)
    canvas[..., sy:sy + ly, sx:sx + lx] = slices[..., ty:ty + ly, tx:tx + lx]
    return resize_slices(canvas, tuple(shape_yx))


def prepare_slices(hu: np.ndarray, config: PreprocessConfig = PreprocessConfig(),
                   spacing_yx: tuple[float, float] | None = None) -> torch.Tensor:
    """(z, y, x) HU -> (z, 1, size, size) float32 tensor, windowed and scaled to 0..1.

    ``spacing_yx`` (mm, canonical rows and columns) is needed when ``config.pixel_mm`` is set."""
    x = torch.from_numpy(window(hu, config.level, config.width)).unsqueeze(1)
    return to_model_grid(x, config, spacing_yx)


def middle_slices(n_slices: int, fraction: float = 0.3) -> np.ndarray:
    """Indices of the middle ``fraction`` of ``n_slices`` slices (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = max(1, int(round(n_slices * fraction)))
    start = (n_slices - count) // 2
    return np.arange(start, start + count)
