"""Offline engine: chain the bundled LiteMedSAM box refiner from slice to slice.

The box for the next slice is the bounding box of the last accepted mask, widened by
:data:`MARGIN_MM`; LiteMedSAM (:class:`polycl.sam.SliceSegmenter`) segments inside it and its
predicted IoU is the slice's confidence. Between two seeds each half is chained from its nearer
seed; beyond the outermost seeds the stop rule (:mod:`polycl.propagate.stop`) decides where the
organ ends. Without a stop rule, chaining runs on through neighbouring organs (docs/propagation.md: 112
slices for a 43-slice liver), so :data:`CHAIN_RULE` was measured on real CT (docs/propagation.md).

Thin slices: the chain walks slices about :data:`STEP_MM` apart (every 2nd slice of a 1.6 mm scan,
every slice of a 3 mm one) and fills the slices it stepped over by shape-based interpolation
(:func:`interpolate_masks`) of the two walked masks around them: neighbouring 1-1.6 mm slices are
nearly the same image, so embedding each costs time without adding information. Between walked
slices the box follows the organ's trend (the change of the last two accepted masks' boxes per
slice), so a box taken from a larger slice does not invite a neighbour in as the organ shrinks. The
first slice the stop rule rejects sends the walk back to the last accepted one, from where it goes
on one slice at a time, so the organ's tip is found as on thick slices. The interactive fill's box
margin is in mm (:data:`MARGIN_MM`), the same on 0.6 mm and 3 mm pixels; Segment's pipeline gives a
margin in pixels (:mod:`polycl.segment.pipeline`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from polycl.masks import mask_box
from polycl.propagate.seeds import Seed
from polycl.propagate.stop import StopRule

#: Default stop rule of the chaining engine (see docs/propagation.md for how it was chosen).
CHAIN_RULE = StopRule(stop_after=3, min_area_mm2=100.0, max_growth=1.5, min_quality=None, hu_tolerance=40.0)
#: Box margin (mm) around the previous slice's mask. Measured: 9 mm (3 px on the 3 mm scans where the
#: rule was tuned); 2 mm (the same 3 px on 0.7 mm pixels) lets the organ shrink a little at every one of
#: a clinical scan's many slices (liver 0.60 -> 0.89 3D Dice from one click, docs/evaluation.md).
MARGIN_MM = 9.0
#: The chain walks slices about this far apart (mm) and interpolates the ones between.
STEP_MM = 3.0
#: Pixels of a chained mask must lie within the seed's 1st..99th HU percentiles widened by this (HU).
HU_MARGIN = 30.0


#: Most slice embeddings an engine keeps (4 MB each) so that a second object re-uses the first one's.
MAX_CACHED_SLICES = 256


def slice_step(slice_mm: float | None) -> int:
    """How many slices one chain step spans: about :data:`STEP_MM` (1 for 3 mm slices or unknown)."""
    if not slice_mm or slice_mm <= 0:
        return 1
    return max(1, int(round(STEP_MM / float(slice_mm))))


def interpolate_masks(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Shape-based interpolation between two (y, x) masks at ``t`` (0 = ``a``, 1 = ``b``): the zero
    level of the blended signed distance maps (negative inside), computed in the masks' joint box.
    An empty mask on either side gives an empty slice (the organ's end is not interpolated)."""
    from scipy import ndimage

    a, b = a > 0, b > 0
    out = np.zeros(a.shape, bool)
    if not a.any() or not b.any():
        return out
    ys, xs = np.nonzero(a | b)
    y0, y1 = max(0, ys.min() - 2), min(a.shape[0], ys.max() + 3)
    x0, x1 = max(0, xs.min() - 2), min(a.shape[1], xs.max() + 3)

    def signed(m):
        return ndimage.distance_transform_edt(~m) - ndimage.distance_transform_edt(m)

    ca, cb = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = (1.0 - t) * signed(ca) + t * signed(cb) < 0
    return out


class ChainEngine:
    """LiteMedSAM chained slice to slice. ``refiner``: a loaded SAM (:class:`polycl.sam.LoadedSam`)
    to reuse, or None to load the bundled LiteMedSAM on ``device``. ``segmenter``: a
    :class:`polycl.sam.SliceSegmenter` already made on the same canonical HU array (its cached
    embeddings are used, and the slices embedded here stay in it for the caller)."""

    name = "chain"

    def __init__(self, refiner=None, *, device="cpu", margin_mm: float = MARGIN_MM, margin_px: float | None = None,
                 segmenter=None) -> None:
        self.refiner = refiner
        self.device = device
        self.margin_mm = float(margin_mm)
        self.margin_px = margin_px
        self.margin = float(margin_px) if margin_px is not None else 3.0  # pixels: set by run() and next_slice()
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

    def _set_margin(self, pixel_area_mm2: float) -> None:
        """:attr:`margin_mm` in pixels of side sqrt(``pixel_area_mm2``) (CT pixels are square), unless
        the engine was given a margin in pixels."""
        if self.margin_px is None:
            self.margin = self.margin_mm / max(float(np.sqrt(pixel_area_mm2)), 1e-6)

    def _step(self, seg, k: int, prev: np.ndarray, trend=None) -> tuple[np.ndarray, np.ndarray, float]:
        """(cleaned mask, raw SAM mask, quality) on slice ``k`` from the box of ``prev``. ``trend``: the
        box's change per slice (x0, y0, x1, y1) and the number of slices to carry it over (the slices
        stepped over), so that the box follows an organ that shrinks or grows between walked slices."""
        seg.set_slice(k)
        box = np.asarray(mask_box(prev, self.margin), float)
        if trend is not None:
            per_slice, n = trend
            moved = box + per_slice * n
            h, w = prev.shape
            if moved[2] - moved[0] >= 2 and moved[3] - moved[1] >= 2:
                box = np.clip(moved, 0, [w - 1, h - 1, w - 1, h - 1])
        raw, quality = seg.predict(box=tuple(box))
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
        self._set_margin(pixel_area_mm2)
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
            pixel_area_mm2: float = 1.0, slice_mm: float | None = None) -> Iterator[tuple[int, np.ndarray, float]]:
        """Yield (canonical slice index, bool mask (y, x), confidence) for slices start..end (inclusive),
        the walked slices as they are made and the slices stepped over once both their neighbours are
        (``slice_mm``: the slice spacing, which sets the step; None: every slice is walked)."""
        seg = self._segmenter(hu)
        self._set_margin(pixel_area_mm2)
        step = slice_step(slice_mm)
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
                for first, last, d in ((a.index, mid, 1), (b.index, mid + 1, -1)):
                    if (last - first) * d > 0:
                        yield from self._walk(seg, hu, first, seed_masks[first], last, d, step)
            # beyond the outermost seeds, with the stop rule
            for edge, limit, d in ((ordered[-1].index, end, 1), (ordered[0].index, start, -1)):
                if (limit - edge) * d > 0:
                    tracker = rule.tracker(seed_masks[edge], hu[edge], pixel_area_mm2)
                    yield from self._walk(seg, hu, edge, seed_masks[edge], limit, d, step, tracker=tracker)

    def _walk(self, seg, hu, first: int, mask: np.ndarray, last: int, d: int, step: int, *,
              tracker=None) -> Iterator[tuple[int, np.ndarray, float]]:
        """Chain from slice ``first`` (its ``mask``) towards ``last`` (inclusive) in direction ``d``, every
        ``step``-th slice and ``last``; a slice between two accepted masks (stepped over, or rejected by the
        stop rule: an organ does not vanish for a slice and come back) is interpolated from them.
        With a ``tracker`` (a stop rule) the walk ends where the rule says the organ ended; the first
        slice the rule rejects sends the walk back to the last accepted one, from where it goes on one
        slice at a time (the organ's tip, found as on thick slices)."""
        prev_k, prev, prev_q = first, mask, 1.0
        k = first
        velocity = None  # the box's change per slice between the last two accepted masks
        while (last - k) * d > 0:
            k = k + d * step if (last - k - d * step) * d >= 0 else last
            skipped = abs(k - prev_k) - 1
            m, raw, q = self._step(seg, k, prev, (velocity, skipped) if velocity is not None and skipped else None)
            stop = False
            if tracker is not None:
                if self._leaks(raw, hu[k], tracker):
                    m = np.zeros_like(m)
                if step > 1 and tracker.vanished_reason(m, hu[k], q):
                    step, k = 1, prev_k  # the organ ends near here: walk on one slice at a time
                    continue
                m, stop = tracker.check(m, hu[k], q)
            if m.any():  # the slices stepped over, or rejected between two accepted ones, are interpolated
                for j in range(prev_k + d, k, d):
                    yield j, interpolate_masks(prev, m, (j - prev_k) / (k - prev_k)), min(prev_q, q)
                velocity = (np.asarray(mask_box(m, 0), float) - np.asarray(mask_box(prev, 0), float)) \
                    / abs(k - prev_k)
                prev_k, prev, prev_q = k, m, q
            yield k, m, (q if m.any() else 0.0)
            if stop:
                return
