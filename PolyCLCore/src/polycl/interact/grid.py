"""Voxel index mapping between a volume's own array and its canonical (LPS) order.

Reorienting to canonical order (:mod:`polycl.orientation`) only permutes and flips axes, so an
input voxel index (z, y, x) of ``volume.array`` maps to a canonical index by ``c = offset + M @ (z, y, x)``
with ``M`` a signed permutation matrix: :meth:`polycl.orientation.Orientation.index_map`, read from
SimpleITK's ``DICOMOrientImageFilter`` (the same object that reorients the arrays, so the mapping
can never disagree with it). :class:`IndexMap` adds bounds checks and float positions.
"""

from __future__ import annotations

import numpy as np

from polycl.errors import InputError
from polycl.orientation import orientation
from polycl.volume import Volume


class IndexMap:
    """Input (z, y, x) voxel indices of ``volume.array`` <-> canonical (z, y, x) voxel indices.

    Indices may be floats (sub-voxel positions from a front end); they are mapped exactly and
    rounded only by :meth:`to_canonical_voxel`.
    """

    def __init__(self, volume: Volume) -> None:
        o = orientation(volume)
        self.shape = tuple(int(s) for s in volume.shape)
        self.matrix, self.offset = o.index_map()
        self.canonical_shape = tuple(int(v) for v in o.canonical_shape)

    def check(self, zyx) -> np.ndarray:
        """Validate an input (z, y, x) index (floats allowed): 3 finite values inside the volume."""
        p = np.asarray(zyx, dtype=float).reshape(-1)
        if p.size != 3 or not np.all(np.isfinite(p)):
            raise InputError(f"a position is (z, y, x) voxel indices, got {zyx!r}")
        r = np.round(p)
        if np.any(r < 0) or np.any(r > np.asarray(self.shape) - 1):
            raise InputError(f"position {tuple(p)} lies outside the volume (shape {self.shape}, (z, y, x))")
        return p

    def to_canonical(self, zyx) -> np.ndarray:
        """Input (z, y, x) -> canonical (z, y, x), floats."""
        return self.offset + self.matrix @ self.check(zyx)

    def to_canonical_voxel(self, zyx) -> tuple[int, int, int]:
        c = np.round(self.to_canonical(zyx)).astype(int)
        return int(c[0]), int(c[1]), int(c[2])

    def to_input(self, czyx) -> np.ndarray:
        """Canonical (z, y, x) -> input (z, y, x), floats (inverse of :meth:`to_canonical`)."""
        return self.matrix.T @ (np.asarray(czyx, dtype=float).reshape(3) - self.offset)

    def input_slice_of(self, canonical_z: int) -> list[int] | None:
        """Input axis-0 indices covered by canonical axial slice ``canonical_z``: one index when
        input axis 0 is the axial axis, else None (the canonical slice cuts across input slices)."""
        if abs(self.matrix[0, 0]) != 1:
            return None
        return [int(round(self.to_input((canonical_z, 0, 0))[0]))]
