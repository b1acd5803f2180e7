"""The paper's preprocessing: HU window, 0..1 scaling, 256x256 slices, middle-slice selection.

All functions take and return (z, y, x) arrays. Slices are axial after :func:`to_canonical`, which
reorients any volume to LPS index order (a permutation/flip only, no interpolation), so a model
always sees the same anatomy the same way up, whatever the file's direction matrix.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from polycl.volume import Volume

CANONICAL = "LPS"


@dataclass(frozen=True)
class PreprocessConfig:
    """Window (HU) and slice size. Defaults are the paper's: level 40, width 400, 256x256."""

    level: float = 40.0
    width: float = 400.0
    size: int = 256

    def to_dict(self) -> dict:
        return asdict(self)


def window(hu: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    """Clip HU to [level - width/2, level + width/2] and scale to 0..1 (float32)."""
    lo = level - width / 2.0
    out = (hu.astype(np.float32) - lo) / float(width)
    return np.clip(out, 0.0, 1.0, out=out)


def to_canonical(volume: Volume) -> np.ndarray:
    """The volume's array reoriented to LPS index order: axis 0 inferior->superior, axis 1
    anterior->posterior, axis 2 right->left (the usual radiological axial view)."""
    if volume.geometry.orientation_code() == CANONICAL:
        return volume.array
    return sitk.GetArrayFromImage(sitk.DICOMOrient(volume.to_sitk(), CANONICAL))


def from_canonical(array: np.ndarray, volume: Volume) -> np.ndarray:
    """Inverse of :func:`to_canonical`: put a canonical-order array back on ``volume``'s grid."""
    code = volume.geometry.orientation_code()
    if code == CANONICAL:
        return array
    size_xyz = [int(s) for s in volume.shape[::-1]]
    canon = sitk.DICOMOrient(volume.geometry.apply_to(sitk.Image(size_xyz, sitk.sitkUInt8)), CANONICAL)
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(canon)
    back = sitk.GetArrayFromImage(sitk.DICOMOrient(image, code))
    assert back.shape == volume.shape, (back.shape, volume.shape)
    return back


def resize_slices(slices: torch.Tensor, size: int | tuple[int, int], *, mode: str = "bilinear") -> torch.Tensor:
    """Resize (N, C, H, W) slices to ``size``. Bilinear for images/probabilities, 'nearest' for labels."""
    if isinstance(size, int):
        size = (size, size)
    if tuple(slices.shape[-2:]) == tuple(size):
        return slices
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(slices, size=size, mode=mode, **kwargs)


def prepare_slices(hu: np.ndarray, config: PreprocessConfig = PreprocessConfig()) -> torch.Tensor:
    """(z, y, x) HU -> (z, 1, size, size) float32 tensor, windowed and scaled to 0..1."""
    x = torch.from_numpy(window(hu, config.level, config.width)).unsqueeze(1)
    return resize_slices(x, config.size)


def middle_slices(n_slices: int, fraction: float = 0.3) -> np.ndarray:
    """Indices of the middle ``fraction`` of ``n_slices`` slices (at least one)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    count = max(1, int(round(n_slices * fraction)))
    start = (n_slices - count) // 2
    return np.arange(start, start + count)
