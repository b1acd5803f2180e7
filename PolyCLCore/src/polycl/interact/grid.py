"""Voxel index mapping between a volume's own array and its canonical (LPS) order.

:func:`polycl.preprocess.to_canonical` only permutes and flips axes, so an input voxel index
(z, y, x) of ``volume.array`` maps to a canonical index by ``c = origin + M @ (z, y, x)`` with ``M``
a signed permutation matrix. :class:`IndexMap` measures ``M`` once by reorienting a probe volume
(the same reorientation :func:`to_canonical` does), so the mapping can never disagree with it.
"""

from __future__ import annotations

import numpy as np

from polycl.errors import InputError
from polycl.preprocess import CANONICAL, to_canonical
from polycl.volume import Volume


class IndexMap:
    """Input (z, y, x) voxel indices of ``volume.array`` <-> canonical (z, y, x) voxel indices.

    Indices may be floats (sub-voxel positions from a front end); they are mapped exactly and
    rounded only by :meth:`to_canonical_voxel`.
    """

    def __init__(self, volume: Volume) -> None:
        self.shape = tuple(int(s) for s in volume.shape)
        if volume.geometry.orientation_code() == CANONICAL:
            self.matrix = np.eye(3)
            self.offset = np.zeros(3)
        else:
            z, y, x = self.shape
            probe = np.arange(z * y * x, dtype=np.int64).reshape(self.shape)
            canon = to_canonical(Volume(probe, volume.geometry))
            # where did input voxels 0, e_z, e_y, e_x go?
            strides = (y * x, x, 1)
            pos = {v: np.argwhere(canon == v)[0] for v in (0, *strides) if v < probe.size}
            c0 = pos[0].astype(float)
            cols = [(pos[s] - c0) if s in pos and n > 1 else np.eye(3)[i]
                    for i, (s, n) in enumerate(zip(strides, self.shape))]
            self.matrix = np.stack(cols, axis=1).astype(float)
            self.offset = c0
        self.canonical_shape = tuple(int(v) for v in np.abs(self.matrix) @ np.asarray(self.shape))

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
