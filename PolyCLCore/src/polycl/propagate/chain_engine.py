"""Offline engine: chain the bundled LiteMedSAM box refiner from slice to slice.

The box for slice k+1 (or k-1) is the bounding box of the last accepted mask, widened by
``margin`` pixels; LiteMedSAM (:class:`polycl.sam.SliceSegmenter`) segments inside it and its
predicted IoU is the slice's confidence. Between two seeds each half is chained from its nearer
seed; beyond the outermost seeds the stop rule (:mod:`polycl.propagate.stop`) decides where the
organ ends. Without a stop rule, chaining runs on through neighbouring organs (docs/propagation.md: 112
slices for a 43-slice liver), so :data:`CHAIN_RULE` was measured on real CT (docs/propagation.md).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from polycl.propagate.seeds import Seed, box_from_mask
from polycl.propagate.stop import StopRule

#: Default stop rule of the chaining engine (see docs/propagation.md for how it was chosen).
CHAIN_RULE = StopRule(stop_after=3, min_area_mm2=100.0, max_growth=1.5, min_quality=None, hu_tolerance=40.0)
#: Box margin in pixels around the previous slice's mask.
MARGIN_PX = 3
#: Pixels of a chained mask must lie within the seed's 1st..99th HU percentiles widened by this (HU).
HU_MARGIN = 30.0


#: Most slice embeddings an engine keeps (4 MB each) so that a second object re-uses the first one's.
MAX_CACHED_SLICES = 256


class ChainEngine:
    """LiteMedSAM chained slice to slice. ``refiner``: a loaded SAM (:class:`polycl.sam.LoadedSam`)
    to reuse, or None to load the bundled LiteMedSAM on ``device``. ``segmenter``: a
    :class:`polycl.sam.SliceSegmenter` already made on the same canonical HU array (its cached
    embeddings are used, and the slices embedded here stay in it for the caller)."""

    name = "chain"

    def __init__(self, refiner=None, *, device="cpu", margin: float = MARGIN_PX, segmenter=None) -> None:
        self.refiner = refiner
        self.device = device
        self.margin = margin
        self.segmenter = segmenter
        self.hu_range: tuple[float, float] | None = None

    def _segmenter(self, hu: np.ndarray):
        """One segmenter per volume, kept across runs (objects) so no slice is embedded twice."""
        from polycl.sam import SliceSegmenter, load_sam

        if self.segmenter is not None and self.segmenter.array.shape == hu.shape and (
                self.segmenter.array is hu or np.array_equal(self.segmenter.array[hu.shape[0] // 2], hu[hu.shape[0] // 2])):
            return self.segmenter
        model = self.refiner if self.refiner is not None else load_sam("litemedsam", device=self.device,
                                                                        download=False)
        self.refiner = model
        self.segmenter = SliceSegmenter(hu, model=model, cache_size=min(hu.shape[0], MAX_CACHED_SLICES))
        return self.segmenter

    def _step(self, seg, k: int, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(cleaned mask, raw SAM mask, quality) on slice ``k`` from the box of ``prev``."""
        seg.set_slice(k)
        raw, quality = seg.predict(box=box_from_mask(prev, self.margin))
        raw = raw > 0
        return self._clean(raw, seg.array[k], prev), raw, quality

    @staticmethod
    def _leaks(raw: np.ndarray, hu: np.ndarray, tracker) -> bool:
        """SAM's raw mask (before HU cleaning) is far from the seed's mean HU: it has left the organ."""
        tol = tracker.rule.hu_tolerance
        if tol is None or tracker.seed_mean_hu is None or not raw.any():
            return False
        return abs(float(hu[raw].mean()) - tracker.seed_mean_hu) > tol

    def _clean(self, mask: np.ndarray, hu: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """Keep pixels whose HU lies in the seed's range, then the component(s) touching ``prev``."""
        from scipy import ndimage

        if self.hu_range is not None:
            mask = mask & (hu >= self.hu_range[0]) & (hu <= self.hu_range[1])
        mask = ndimage.binary_opening(mask, iterations=1)
        lab, n = ndimage.label(mask)
        if n > 1:
            overlap = np.bincount(lab[prev > 0], minlength=n + 1)[1:]
            sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
            keep = np.flatnonzero(overlap > 0) + 1 if overlap.any() else [int(np.argmax(sizes)) + 1]
            mask = np.isin(lab, keep)
        return ndimage.binary_fill_holes(mask)

    def set_hu_range(self, hu: np.ndarray, seed_masks: dict[int, np.ndarray]) -> None:
        """The HU range chained masks must keep to: the seeds' 1st..99th percentiles +- HU_MARGIN."""
        values = np.concatenate([hu[k][m] for k, m in seed_masks.items()])
        lo, hi = np.percentile(values, [1, 99])
        self.hu_range = (float(lo) - HU_MARGIN, float(hi) + HU_MARGIN)

    def next_slice(self, hu: np.ndarray, k: int, prev: np.ndarray, rule: StopRule, pixel_area_mm2: float = 1.0,
                   *, prev_index: int | None = None, objects: list[np.ndarray] | None = None) -> tuple[np.ndarray, float]:
        """Slice ``k``'s mask chained from the neighbouring slice's ``prev`` (y, x) mask, as
        :meth:`run` chains beyond a seed: each object its own box (``objects``: the objects of
        ``prev`` as (y, x) masks; default: ``prev`` is one object), SAM's mask cleaned, and an object
        the stop rule finds implausible (vanished: too small, grown too much, HU off the previous
        slice's by more than its tolerance) dropped. ``prev_index``: the slice ``prev`` is on
        (default: the neighbour towards ``k``'s other side is unknown, so slice ``k`` itself).
        Returns (bool mask, the lowest confidence of the objects kept, 0.0 when none is)."""
        seg = self._segmenter(hu)
        out = np.zeros(prev.shape, bool)
        confs = []
        ref = hu[k if prev_index is None else prev_index]
        with torch.inference_mode():
            for piece in (objects if objects is not None else [prev]):
                if not piece.any():
                    continue
                m, raw, q = self._step(seg, k, piece)
                tracker = rule.tracker(piece, ref, pixel_area_mm2)
                m, _ = tracker.check(np.zeros_like(m) if self._leaks(raw, hu[k], tracker) else m, hu[k], q)
                if m.any():
                    out |= m
                    confs.append(q)
        return out, (min(confs) if confs else 0.0)

    def _seed_mask(self, seg, s: Seed) -> tuple[np.ndarray, float]:
        if s.mask is not None:
            return s.mask, 1.0
        seg.set_slice(s.index)
        mask, q = seg.predict(box=s.box, points=s.points, labels=s.labels)
        return mask > 0, q

    def run(self, hu: np.ndarray, seeds: list[Seed], *, start: int, end: int, rule: StopRule,
            pixel_area_mm2: float = 1.0) -> Iterator[tuple[int, np.ndarray, float]]:
        """Yield (canonical slice index, bool mask (y, x), confidence) for slices start..end (inclusive)."""
        seg = self._segmenter(hu)
        ordered = sorted(seeds, key=lambda s: s.index)
        seed_masks: dict[int, np.ndarray] = {}
        with torch.inference_mode():
            for s in ordered:
                m, q = self._seed_mask(seg, s)
                seed_masks[s.index] = m
                yield s.index, m, q
            self.set_hu_range(hu, seed_masks)
            # between consecutive seeds: each half from its nearer seed, no stop rule
            for a, b in zip(ordered, ordered[1:]):
                mid = (a.index + b.index) // 2
                for first, last, step in ((a.index, mid, 1), (b.index, mid + 1, -1)):
                    prev = seed_masks[first]
                    for k in range(first + step, last + step, step):
                        if k in seed_masks:
                            continue
                        m, _, q = self._step(seg, k, prev) if prev.any() else (np.zeros_like(prev), None, 0.0)
                        yield k, m, q
                        if m.any():
                            prev = m
            # beyond the outermost seeds, with the stop rule
            for edge, limit, step in ((ordered[-1].index, end, 1), (ordered[0].index, start, -1)):
                prev = seed_masks[edge]
                tracker = rule.tracker(prev, hu[edge], pixel_area_mm2)
                for k in range(edge + step, limit + step, step):
                    m, raw, q = self._step(seg, k, prev)
                    m, stop = tracker.check(np.zeros_like(m) if self._leaks(raw, hu[k], tracker) else m, hu[k], q)
                    yield k, m, (q if m.any() else 0.0)
                    if stop:
                        break
                    if m.any():
                        prev = m
