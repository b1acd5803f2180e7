"""Seeds of a propagation: annotated slices (masks), boxes or points, in canonical slice space.

Objects: two kidneys are two objects. A seed mask is split into its connected pieces (2D pieces on
annotated slices, grouped across slices when their boxes overlap; 3D components of a coarse volume),
and every piece becomes a :class:`Seed` with its own ``obj`` number, so that each object gets its
own box, stop rule and confidence when it is propagated. A piece under :data:`MIN_OBJECT_FRACTION`
of the slice's largest (the tip of a liver lobe) stays with its nearest larger piece; pieces under
:data:`MIN_OBJECT_PX` pixels (stray paint) are not seeds unless nothing larger is there.

All indices here are *canonical* axial indices (axis 0 of :func:`polycl.preprocess.to_canonical`,
inferior -> superior) and all 2D coordinates are canonical slice pixels (x = column, y = row).
:func:`canonical_slice_index` converts a slice index of the input volume's own array (axis 0, i.e.
Slicer's IJK ``k``) to the canonical one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polycl.errors import InputError
from polycl.masks import boxes_overlap, components_by_size, label_by_size, mask_box, nonempty_slices
from polycl.orientation import orientation
from polycl.preprocess import to_canonical
from polycl.volume import Volume

#: A mask volume with more annotated slices than this is a *coarse volume*: its middle non-empty
#: slice becomes the single reference slice (the paper's choice). Up to this many, every annotated
#: slice is a seed (a user re-seeding from corrected slices).
MAX_SEED_SLICES = 3
#: 2D pieces of a seed slice smaller than this (pixels) are stray marks, not objects to propagate.
MIN_OBJECT_PX = 20
#: 2D pieces smaller than this fraction of a slice's largest piece belong to the nearest larger one.
MIN_OBJECT_FRACTION = 0.25
#: 3D components of a coarse seed volume smaller than this fraction of the largest are not objects.
MIN_COMPONENT_FRACTION = 0.1


@dataclass
class Seed:
    """A prompt on one canonical slice: a mask (y, x), a box (x0, y0, x1, y1) or points (n, 2) + labels.

    ``obj``: the object it belongs to; seeds of one object are propagated together, each object
    on its own."""

    index: int
    mask: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    obj: int = 0

    def __post_init__(self) -> None:
        if self.mask is None and self.box is None and self.points is None:
            raise InputError(f"seed on slice {self.index} has no mask, box or points")
        if self.mask is not None:
            self.mask = np.asarray(self.mask) > 0
            if not self.mask.any():
                raise InputError(f"seed mask on slice {self.index} is empty")
        if self.points is not None:
            self.points = np.asarray(self.points, dtype=np.float32).reshape(-1, 2)
            self.labels = (np.ones(len(self.points), np.int32) if self.labels is None
                           else np.asarray(self.labels, dtype=np.int32).reshape(-1))
            if len(self.labels) != len(self.points):
                raise InputError("points and labels differ in number")

    def as_box(self, margin: float = 0.0) -> tuple[float, float, float, float]:
        if self.box is not None:
            return tuple(float(v) for v in self.box)
        if self.mask is not None:
            return mask_box(self.mask, margin)
        xs, ys = self.points[:, 0], self.points[:, 1]
        return float(xs.min() - margin), float(ys.min() - margin), float(xs.max() + margin), float(ys.max() + margin)


__all__ = ["Seed", "canonical_mask", "canonical_slice_index", "input_slice_index", "nonempty_slices",
           "reference_slice", "seeds_from_mask", "slice_objects"]


def reference_slice(mask_zyx: np.ndarray) -> int:
    """The paper's reference slice of a coarse mask: the middle of its non-empty slices."""
    idx = nonempty_slices(mask_zyx)
    if len(idx) == 0:
        raise InputError("seed mask is empty: nothing is labelled")
    return int(idx[len(idx) // 2])


def seeds_from_mask(mask_zyx: np.ndarray, slices: list[int] | None = None, *,
                    max_seed_slices: int = MAX_SEED_SLICES, split_objects: bool = True) -> list[Seed]:
    """Seeds from a canonical (z, y, x) mask, one per object and seed slice.

    ``slices`` given: exactly those slices (each must be annotated). Otherwise every annotated slice
    when there are at most ``max_seed_slices`` of them, else a coarse volume: the reference slice
    (middle non-empty slice, the paper's choice) of each of its 3D components. ``split_objects``
    False keeps the whole slice mask as one object (the behaviour before per-object propagation).
    """
    mask = np.asarray(mask_zyx) > 0
    annotated = nonempty_slices(mask)
    if len(annotated) == 0:
        raise InputError("seed mask is empty: nothing is labelled")
    if slices is not None:
        chosen = sorted({int(k) for k in slices})
        for k in chosen:
            if not 0 <= k < mask.shape[0]:
                raise InputError(f"seed slice {k} is outside the volume (0..{mask.shape[0] - 1})")
            if not mask[k].any():
                near = annotated[np.argmin(np.abs(annotated - k))]
                raise InputError(f"seed slice {k} is not annotated (nearest annotated slice: {near})")
        return _slice_seeds(mask, chosen, "chosen slice", split_objects)
    if len(annotated) <= max_seed_slices:
        return _slice_seeds(mask, [int(k) for k in annotated], "annotated slice", split_objects)
    if not split_objects:
        k = reference_slice(mask)
        return [Seed(k, mask[k], meta={"from": f"middle of {len(annotated)} non-empty slices"})]
    return _component_seeds(mask)


def slice_objects(mask2d: np.ndarray, min_px: int = MIN_OBJECT_PX,
                  min_fraction: float = MIN_OBJECT_FRACTION) -> list[np.ndarray]:
    """The objects of a slice mask, largest first: its 2D connected pieces (8-connectivity) of at
    least ``min_fraction`` of the largest piece's area. A smaller piece (a liver lobe's tip, a
    stray stroke of paint) joins the object whose centroid is nearest; pieces under ``min_px``
    pixels are dropped unless there is nothing larger."""
    lab, regions = label_by_size(mask2d, 2)
    kept = [r for r in regions if r.area >= min_px] or regions[:1]
    big = [r for r in kept if r.area >= min_fraction * kept[0].area]
    objects = [lab == r.label for r in big]
    centroids = np.array([r.centroid for r in big])
    for r in kept[len(big):]:
        nearest = int(np.argmin(((centroids - np.array(r.centroid)) ** 2).sum(axis=1)))
        objects[nearest] |= lab == r.label
    return objects


def _slice_seeds(mask: np.ndarray, chosen: list[int], origin: str, split: bool) -> list[Seed]:
    """Seeds on the given slices; pieces on different slices whose boxes overlap are one object."""
    if not split:
        return [Seed(k, mask[k], meta={"from": origin}) for k in chosen]
    seeds: list[Seed] = []
    n_obj = 0
    for k in chosen:
        for piece in slice_objects(mask[k]):
            same = [s.obj for s in seeds if s.index != k and boxes_overlap(s.mask, piece)]
            obj = same[0] if same else n_obj
            n_obj += not same
            seeds.append(Seed(k, piece, meta={"from": origin}, obj=obj))
    return seeds


def _component_seeds(mask: np.ndarray) -> list[Seed]:
    """The reference slice of each 3D component (26-connectivity) of a coarse volume."""
    comps = components_by_size(mask, min_fraction=MIN_COMPONENT_FRACTION)
    seeds = []
    for obj, comp in enumerate(comps):
        k = reference_slice(comp)
        seeds.append(Seed(k, comp[k], obj=obj,
                          meta={"from": f"middle of the {len(nonempty_slices(comp))} non-empty slices of component "
                                        f"{obj + 1} of {len(comps)}"}))
    return seeds


def canonical_slice_index(volume: Volume, k: int) -> int:
    """Canonical axial index of slice ``k`` of ``volume``'s own array (axis 0, Slicer's IJK k).

    Raises :class:`InputError` when axis 0 of the input is not its axial axis (e.g. a sagittal
    acquisition), since a 'slice k' of such a file is not an axial slice.
    """
    return orientation(volume).canonical_slice(k)


def input_slice_index(volume: Volume, canonical: int) -> int:
    """Inverse of :func:`canonical_slice_index`."""
    return orientation(volume).input_slice(canonical)


def canonical_mask(volume: Volume, seed: Volume | np.ndarray) -> np.ndarray:
    """The seed mask (on ``volume``'s grid) in canonical order, as bool."""
    if isinstance(seed, Volume):
        arr = seed.array
    else:
        arr = np.asarray(seed)
    if arr.shape != volume.shape:
        raise InputError(f"seed mask shape {arr.shape} differs from the image's {volume.shape}")
    return to_canonical(Volume((arr > 0).astype(np.uint8), volume.geometry)) > 0
