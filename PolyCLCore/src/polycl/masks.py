"""Binary mask helpers used by every operation: connected components by size, boxes, Dice.

Masks are numpy arrays, 2D (y, x) or 3D (z, y, x); nonzero = inside. Components use
scikit-image's ``label`` with full connectivity by default (8-connectivity in 2D, 26 in 3D).
Boxes are ``(x0, y0, x1, y1)`` in pixel indices of a slice, inclusive (x = column = axis 1 of a
2D mask, y = row = axis 0), the box prompt format of SAM.
"""

from __future__ import annotations

import numpy as np

from polycl.errors import InputError


# -- connected components -----------------------------------------------------------------------
def label_by_size(mask: np.ndarray, connectivity: int | None = None):
    """(labels, regions): scikit-image labels of ``mask`` and its ``regionprops``, largest first
    (``region.label``, ``.area`` in voxels, ``.bbox``, ``.centroid``)."""
    from skimage.measure import label, regionprops

    lab = label(np.asarray(mask) > 0, connectivity=connectivity or np.ndim(mask))
    return lab, sorted(regionprops(lab), key=lambda r: r.area, reverse=True)


def components_by_size(mask: np.ndarray, *, keep: int | None = None, min_fraction: float = 0.0,
                       min_size: int = 1, connectivity: int | None = None) -> list[np.ndarray]:
    """The connected components of ``mask`` as bool masks, largest first: at most ``keep`` of them,
    each of at least ``min_size`` voxels and ``min_fraction`` of the largest component's size."""
    lab, regions = label_by_size(mask, connectivity)
    regions = regions[:keep] if keep is not None else regions
    if not regions:
        return []
    biggest = regions[0].area
    return [lab == r.label for r in regions if r.area >= max(min_size, min_fraction * biggest)]


def largest_components(mask: np.ndarray, keep: int = 1, min_fraction: float = 0.0) -> np.ndarray:
    """uint8 mask of the ``keep`` largest 3D components (26-connectivity); components smaller than
    ``min_fraction`` of the largest are dropped even when within ``keep`` (kidneys: keep=2,
    min_fraction=0.2 keeps both kidneys but not a small false island)."""
    lab, regions = label_by_size(mask)
    regions = regions[:keep]
    labels = [r.label for r in regions if regions and r.area >= min_fraction * regions[0].area]
    return np.isin(lab, labels).astype(np.uint8)


# -- boxes --------------------------------------------------------------------------------------
def mask_box(mask2d: np.ndarray, margin: float = 0.0, *, clip: bool = True) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) pixel box around a 2D mask (inclusive), widened by ``margin`` px on each side
    and, with ``clip``, clipped to the slice. Raises :class:`InputError` for an empty mask."""
    ys, xs = np.nonzero(mask2d)
    if len(xs) == 0:
        raise InputError("cannot make a box from an empty mask")
    box = (float(xs.min() - margin), float(ys.min() - margin), float(xs.max() + margin), float(ys.max() + margin))
    return tuple(float(v) for v in clip_box(box, mask2d.shape)[0]) if clip else box


def component_boxes(mask2d: np.ndarray, margin: int, min_component_px: int):
    """2D components of ``mask2d`` -> ([(box (x0, y0, x1, y1), component bool mask)], n_skipped),
    largest first; components under ``min_component_px`` pixels are skipped (counted).

    The box is the component's pixel extent (inclusive) grown by ``margin`` px, not yet clipped."""
    lab, regions = label_by_size(mask2d, 2)
    out = []
    for region in regions:
        if region.area >= min_component_px:
            y0, x0, y1, x1 = region.bbox
            out.append(((x0 - margin, y0 - margin, x1 - 1 + margin, y1 - 1 + margin), lab == region.label))
    return out, len(regions) - len(out)


def check_box(box, shape: tuple[int, int]) -> np.ndarray:
    """Validate a (x0, y0, x1, y1) box in pixel indices of a ``shape`` = (h, w) slice and clip it to
    the slice (float32). Raises :class:`InputError` for a malformed, inverted or outside box."""
    b = np.asarray(box, dtype=np.float32).reshape(-1)
    if b.size != 4 or not np.all(np.isfinite(b)):
        raise InputError(f"a box is (x0, y0, x1, y1); got {box!r}")
    h, w = shape
    x0, y0, x1, y1 = b
    if x1 < x0 or y1 < y0:
        raise InputError(f"box {tuple(b.tolist())} has x1 < x0 or y1 < y0")
    if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
        raise InputError(f"box {tuple(b.tolist())} lies outside the {w}x{h} slice")
    return clip_box(b, shape)[0]


def clip_box(box, shape: tuple[int, int]) -> tuple[np.ndarray, bool]:
    """(box clipped to a (h, w) slice as float32, whether clipping changed it)."""
    h, w = shape
    b = np.asarray(box, dtype=np.float32).reshape(-1)
    clipped = np.array([max(b[0], 0), max(b[1], 0), min(b[2], w - 1), min(b[3], h - 1)], np.float32)
    return clipped, bool(np.any(clipped != b))


def box_region(box, shape: tuple[int, int]) -> tuple[slice, slice]:
    """(rows, columns) slices of the pixels inside ``box`` (rounded, clipped to a (h, w) slice)."""
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    return slice(max(y0, 0), min(y1, shape[0] - 1) + 1), slice(max(x0, 0), min(x1, shape[1] - 1) + 1)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the boxes around two (non-empty) 2D masks overlap."""
    ax0, ay0, ax1, ay1 = mask_box(a, clip=False)
    bx0, by0, bx1, by1 = mask_box(b, clip=False)
    return not (ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0)


# -- agreement ----------------------------------------------------------------------------------
def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks of the same shape, 2D or 3D (1.0 when both are empty)."""
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    s = int(a.sum()) + int(b.sum())
    return float(2 * np.logical_and(a, b).sum() / s) if s else 1.0


def nonempty_slices(mask_zyx: np.ndarray) -> np.ndarray:
    """Indices of the slices (axis 0) of a (z, y, x) mask with any voxel set."""
    mask_zyx = np.asarray(mask_zyx)
    return np.flatnonzero(mask_zyx.reshape(mask_zyx.shape[0], -1).any(axis=1))

