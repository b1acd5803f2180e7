"""Index maps between a volume's own array and canonical LPS order, from SimpleITK.

Canonical order (what every model in polycl sees): array axis 0 inferior -> superior, axis 1
anterior -> posterior, axis 2 right -> left, i.e. ITK's "LPS" orientation code. Reorienting is a
permutation of axes plus flips (no interpolation). SimpleITK's ``DICOMOrientImageFilter`` says
which: its ``GetPermuteOrder()`` (output axis i is input axis ``permute[i]``, ITK (x, y, z) order)
and ``GetFlipAxes()`` (output axes flipped after the permutation). :class:`Orientation` holds both
and applies them to numpy (z, y, x) arrays, so no image is copied through SimpleITK and no map is
found by probing.

Example::

    o = Orientation.of(volume.geometry)
    hu = o.to_canonical(volume.array)          # (z', y', x') canonical
    back = o.from_canonical(mask)              # on volume's grid again
    k_canonical = o.canonical_slice(k)         # input slice k (axis 0) -> canonical axis-0 index
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from polycl.errors import InputError
from polycl.volume import Geometry

CANONICAL = "LPS"


@dataclass(frozen=True)
class Orientation:
    """How an array with some direction matrix maps onto canonical LPS order.

    ``permute_xyz[i]``: the input ITK axis (0 = x, 1 = y, 2 = z) that becomes canonical axis i;
    ``flip_xyz[i]``: canonical axis i runs backwards relative to that input axis;
    ``shape``: the input array's (z, y, x) shape; ``code``: the input's orientation code."""

    permute_xyz: tuple[int, int, int]
    flip_xyz: tuple[bool, bool, bool]
    shape: tuple[int, int, int]
    code: str
    spacing_xyz: tuple[float, float, float]

    @classmethod
    def of(cls, geometry: Geometry, shape: tuple[int, int, int] = (1, 1, 1)) -> "Orientation":
        """The orientation of a (z, y, x) ``shape`` array placed by ``geometry`` (no voxel data needed)."""
        code = geometry.orientation_code()
        if code == CANONICAL:
            return cls((0, 1, 2), (False, False, False), tuple(int(v) for v in shape), code, geometry.spacing)
        f = sitk.DICOMOrientImageFilter()
        f.SetDesiredCoordinateOrientation(CANONICAL)
        f.Execute(geometry.apply_to(sitk.Image([1, 1, 1], sitk.sitkUInt8)))
        permute = tuple(int(v) for v in f.GetPermuteOrder())
        flip = tuple(bool(v) for v in f.GetFlipAxes())
        spacing = tuple(float(geometry.spacing[p]) for p in permute)
        return cls(permute, flip, tuple(int(v) for v in shape), code, spacing)

    @property
    def identity(self) -> bool:
        return self.permute_xyz == (0, 1, 2) and not any(self.flip_xyz)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """(z, y, x) shape of the canonical array."""
        size_xyz = self.shape[::-1]
        return tuple(size_xyz[p] for p in self.permute_xyz)[::-1]

    def _axes_zyx(self) -> tuple[tuple[int, int, int], tuple[int, ...]]:
        """numpy transpose order and flipped numpy axes of the canonical array."""
        # canonical numpy axis a (= ITK axis 2 - a) comes from input ITK axis permute[2 - a],
        # i.e. input numpy axis 2 - permute[2 - a]
        order = tuple(2 - self.permute_xyz[2 - a] for a in range(3))
        flips = tuple(2 - i for i in range(3) if self.flip_xyz[i])
        return order, flips

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """A (z, y, x) array on the input grid -> canonical order (a new contiguous array; bool -> uint8,
        as SimpleITK stores masks). The identity returns ``array`` itself."""
        if self.identity:
            return array
        array = np.asarray(array)
        if array.dtype == bool:
            array = array.astype(np.uint8)
        order, flips = self._axes_zyx()
        out = np.transpose(array, order)
        return np.ascontiguousarray(np.flip(out, flips) if flips else out)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_canonical`: a canonical (z, y, x) array back on the input grid."""
        if self.identity:
            return array
        array = np.asarray(array)
        if array.shape != self.canonical_shape:
            raise InputError(f"array shape {array.shape} is not the canonical shape {self.canonical_shape}")
        order, flips = self._axes_zyx()
        out = np.flip(array, flips) if flips else array
        return np.ascontiguousarray(np.transpose(out, np.argsort(order)))

    def index_map(self) -> tuple[np.ndarray, np.ndarray]:
        """(M, offset): the canonical (z, y, x) index of input voxel index p = (z, y, x) is
        ``offset + M @ p`` (M a signed permutation matrix; works for float positions too)."""
        order, flips = self._axes_zyx()
        m, offset = np.zeros((3, 3)), np.zeros(3)
        for a in range(3):
            flipped = a in flips
            m[a, order[a]] = -1.0 if flipped else 1.0
            offset[a] = self.shape[order[a]] - 1 if flipped else 0.0
        return m, offset

    # -- slices and boxes ---------------------------------------------------------------------------
    def _require_axial(self) -> None:
        if self.permute_xyz[2] != 2:
            raise InputError(f"the slices (array axis 0) of this image are not axial (orientation {self.code}); "
                             "give the prompt as a mask volume")

    def canonical_slice(self, k: int) -> int:
        """Canonical axis-0 index of the input's slice ``k`` (axis 0, Slicer's IJK k). Raises
        :class:`InputError` when axis 0 is not the axial axis (e.g. a sagittal acquisition)."""
        z = self.shape[0]
        if not 0 <= int(k) < z:
            raise InputError(f"slice {k} is outside the volume (0..{z - 1})")
        self._require_axial()
        return z - 1 - int(k) if self.flip_xyz[2] else int(k)

    def input_slice(self, canonical: int) -> int:
        """Inverse of :meth:`canonical_slice` (the map is its own inverse: identity or reversal)."""
        return self.canonical_slice(canonical)

    def canonical_box(self, k: int, box) -> tuple[int, tuple[float, float, float, float]]:
        """A box (x0, y0, x1, y1) on input slice ``k`` (array indices: x = axis 2, y = axis 1) ->
        (canonical slice, the same pixels' box on it). Coordinates are rounded to whole pixels and
        clipped to the slice (as :func:`polycl.masks.box_region`)."""
        from polycl.masks import box_region

        kc = self.canonical_slice(k)
        if self.identity:
            return kc, tuple(float(v) for v in box)
        _, h, w = self.shape
        ys, xs = box_region(box, (h, w))
        lo_hi = {0: (xs.start, xs.stop - 1, w), 1: (ys.start, ys.stop - 1, h)}  # ITK axis -> (lo, hi, n)
        out = []
        for axis in (0, 1):  # canonical x, then y
            lo, hi, n = lo_hi[self.permute_xyz[axis]]
            if self.flip_xyz[axis]:
                lo, hi = n - 1 - hi, n - 1 - lo
            out.append((float(lo), float(hi)))
        (x0, x1), (y0, y1) = out
        return kc, (x0, y0, x1, y1)


def orientation(volume) -> Orientation:
    """The :class:`Orientation` of a :class:`~polycl.volume.Volume`."""
    return Orientation.of(volume.geometry, volume.shape)
