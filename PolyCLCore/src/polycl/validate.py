"""Checks that an image is what an operation needs, with messages a user can act on.

Every check raises before anything is written, so a refused input changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polycl.errors import GeometryError, InputError, NotCTError
from polycl.volume import Volume

#: HU below which a voxel counts as air. Real CT has air around the body and in the lungs/bowel.
AIR_HU = -900.0
#: Minimum fraction of air voxels for a CT verdict (0.1 %: a tight abdominal crop still has bowel gas).
MIN_AIR_FRACTION = 0.001
#: Plausible HU range (padding values down to -3024 occur; metal reaches a few thousand).
HU_RANGE = (-4000.0, 40000.0)


@dataclass
class CTReport:
    """Summary of a volume's intensities and the verdict of :func:`ct_report`."""

    is_ct: bool
    reason: str
    minimum: float
    maximum: float
    mean: float
    percentiles: dict[str, float]
    air_fraction: float

    def lines(self) -> list[str]:
        p = self.percentiles
        return [
            f"HU min/mean/max: {self.minimum:.0f} / {self.mean:.1f} / {self.maximum:.0f}",
            "HU percentiles 1/50/99: " + " / ".join(f"{p[k]:.0f}" for k in ("p1", "p50", "p99")),
            f"air (< {AIR_HU:.0f} HU): {100 * self.air_fraction:.2f} % of voxels",
            f"CT verdict: {'looks like CT' if self.is_ct else 'NOT CT'} ({self.reason})",
        ]


def ct_report(volume: Volume, *, max_samples: int = 2_000_000) -> CTReport:
    """Decide whether ``volume`` looks like CT in Hounsfield units, and say why."""
    a = volume.array
    flat = a.ravel()
    if flat.size > max_samples:  # a strided subsample keeps this fast on big scans
        flat = flat[:: int(np.ceil(flat.size / max_samples))]
    flat = flat.astype(np.float32)
    if not np.all(np.isfinite(flat)):
        raise InputError(f"{volume.source or 'image'}: contains NaN or infinite values")
    p1, p50, p99 = np.percentile(flat, [1, 50, 99])
    lo, hi = float(flat.min()), float(flat.max())
    air = float(np.mean(flat < AIR_HU))
    if lo < HU_RANGE[0] or hi > HU_RANGE[1]:
        ok, reason = False, f"values {lo:.0f}..{hi:.0f} are outside any Hounsfield range"
    elif air < MIN_AIR_FRACTION:
        hint = " (values start at 0: raw stored values, MR, or a normalised image?)" if lo >= 0 else ""
        ok, reason = False, (
            f"no air near -1000 HU: {100 * air:.3f} % of voxels are below {AIR_HU:.0f} HU "
            f"(minimum {lo:.0f}){hint}"
        )
    else:
        ok, reason = True, f"{100 * air:.1f} % of voxels are air (< {AIR_HU:.0f} HU)"
    return CTReport(ok, reason, lo, hi, float(flat.mean()), {"p1": p1, "p50": p50, "p99": p99}, air)


def require_ct(volume: Volume) -> CTReport:
    """Raise :class:`NotCTError` unless the volume looks like CT in HU."""
    check_3d_volume(volume)
    report = ct_report(volume)
    if not report.is_ct:
        raise NotCTError(f"{volume.source or 'image'} does not look like CT: {report.reason}")
    return report


def check_3d_volume(volume: Volume, *, min_slices: int = 2, min_size: int = 16) -> None:
    z, y, x = volume.shape
    if z < min_slices:
        raise InputError(f"{volume.source or 'image'}: {z} slice(s); a volume needs at least {min_slices}")
    if y < min_size or x < min_size:
        raise InputError(f"{volume.source or 'image'}: slices of {y}x{x} voxels are too small (min {min_size})")


def require_same_grid(image: Volume, other: Volume, what: str = "label", option: str | None = None) -> None:
    """Refuse ``other`` unless it is on ``image``'s grid; the message lists what differs (shape,
    spacing, origin, direction: the mask's value first, the image's second) and names ``option``,
    the command's flag that resamples instead."""
    if not image.geometry.same_grid_as(other.geometry, image.shape, other.shape):
        how = (f"give {option} to resample it onto the image (nearest neighbour, in physical space)" if option
               else "resample it onto the image first")
        raise GeometryError(
            f"{what} {other.source or ''} is not on the image's grid "
            f"({image.geometry.difference(other.geometry, image.shape, other.shape) or 'voxel positions'}; "
            f"the {what}'s value first, then the image's); {how}")


def require_nonempty(mask: np.ndarray, what: str = "mask") -> None:
    if not np.any(mask):
        raise InputError(f"{what} is empty: nothing is labelled")
