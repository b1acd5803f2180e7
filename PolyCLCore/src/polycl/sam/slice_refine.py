"""Per-slice SAM box refinement of coarse mask components (the whole-volume operation, its options
and guards are described in :mod:`polycl.refine`).

:func:`refine_slice` takes the current slice of a :class:`~polycl.sam.SliceSegmenter` and the coarse
components on it (:func:`polycl.masks.component_boxes`); per component it asks SAM with widened
boxes, re-asks once along a side the mask runs into, and keeps the coarse component where SAM is
unsure (quality) or disagrees (Dice). :class:`SliceRefinement` says what it did.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from polycl.masks import box_region, clip_box, dice

DEFAULT_EXPAND_MM = (0.0, 5.0, 10.0, 20.0)


@dataclass
class SliceRefinement:
    """What :func:`refine_slice` made of one slice's coarse components (bool (y, x) masks)."""

    mask: np.ndarray      # SAM's masks of the refined components + the coarse components kept as they were
    replaced: np.ndarray  # the coarse components SAM replaced (clear these, then set ``mask``)
    qualities: list       # SAM quality of each refined component
    #: components per outcome: refined, kept_low_quality, kept_disagreement (kept coarse), widened
    #: (the winning box was a widened one), touching_border (box clipped at the image border)
    counts: Counter = field(default_factory=Counter)

    @property
    def quality(self) -> float:
        """Mean SAM quality of the refined components; 0 when SAM's mask was kept nowhere."""
        return float(np.mean(self.qualities)) if self.qualities else 0.0

    def apply(self, coarse2d: np.ndarray) -> np.ndarray:
        """The refined slice: ``coarse2d`` with the replaced components swapped for SAM's masks."""
        return ((coarse2d > 0) & ~self.replaced) | self.mask


def refine_slice(segmenter, components, spacing_xy, *, expand_mm: Sequence[float] = DEFAULT_EXPAND_MM,
                 min_quality: float = 0.8, min_agreement: float = 0.5) -> SliceRefinement:
    """Refine the coarse components of the segmenter's current slice, each with its guards.

    ``components``: [(box (x0, y0, x1, y1) px, bool (y, x) component mask)] from
    :func:`polycl.masks.component_boxes`; ``spacing_xy``: (x, y) pixel size in mm (for the widened boxes).
    A component whose best SAM quality is below ``min_quality``, or whose SAM mask agrees with it
    less than ``min_agreement`` (Dice), is kept as it was."""
    shape2d = segmenter.array.shape[1:]
    r = SliceRefinement(np.zeros(shape2d, bool), np.zeros(shape2d, bool), [])
    for box, comp in components:
        m, q, widened, touched = _refine_component(segmenter, box, comp, shape2d, spacing_xy, expand_mm)
        r.counts["touching_border"] += touched
        if q < min_quality:
            r.counts["kept_low_quality"] += 1
            r.mask |= comp
        elif dice(m, comp) < min_agreement:
            r.counts["kept_disagreement"] += 1
            r.mask |= comp
        else:
            r.counts["refined"] += 1
            r.counts["widened"] += widened
            r.qualities.append(q)
            r.replaced |= comp
            r.mask |= m
    return r


def _sides_touched(m: np.ndarray, box, shape, frac: float = 0.05) -> list[int]:
    """Sides (0 left, 1 top, 2 right, 3 bottom) of ``box`` along which ``m`` runs for > frac of the side
    (sides at the image border do not count: nothing lies beyond them)."""
    h, w = shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    sides = []
    if x0 > 0 and m[y0:y1 + 1, x0].mean() > frac:
        sides.append(0)
    if y0 > 0 and m[y0, x0:x1 + 1].mean() > frac:
        sides.append(1)
    if x1 < w - 1 and m[y0:y1 + 1, x1].mean() > frac:
        sides.append(2)
    if y1 < h - 1 and m[y1, x0:x1 + 1].mean() > frac:
        sides.append(3)
    return sides


def _refine_component(seg, box, comp, shape2d, spacing_xy, expand_mm):
    """Best SAM mask for one coarse component: widened candidates, best quality, one border re-ask.

    Returns (mask bool (y, x) clipped to its box, quality, widened?, clipped at image border?)."""
    sx, sy = float(spacing_xy[0]), float(spacing_xy[1])
    expand = list(expand_mm) or [0.0]
    cands, touched = [], False
    for e in expand:
        b, clipped = clip_box((box[0] - e / sx, box[1] - e / sy, box[2] + e / sx, box[3] + e / sy), shape2d)
        touched |= clipped and e == expand[0]
        cands.append(b)
    masks, quals = seg.predict_boxes(cands)
    i = int(np.argmax(quals))
    best_box, best_m, best_q = cands[i], masks[i].astype(bool), float(quals[i])
    sides = _sides_touched(best_m, best_box, shape2d) if expand_mm else []
    if sides:  # the organ runs on beyond the box: widen those sides and ask once more
        grow_x = max(10.0 / sx, 0.15 * (best_box[2] - best_box[0]))
        grow_y = max(10.0 / sy, 0.15 * (best_box[3] - best_box[1]))
        b = best_box.copy()
        b[0] -= grow_x * (0 in sides)
        b[1] -= grow_y * (1 in sides)
        b[2] += grow_x * (2 in sides)
        b[3] += grow_y * (3 in sides)
        b, _ = clip_box(b, shape2d)
        m2, q2 = seg.predict_boxes([b])
        if float(q2[0]) >= best_q:
            best_box, best_m, best_q, i = b, m2[0].astype(bool), float(q2[0]), len(cands)
    ys, xs = box_region(best_box, shape2d)
    clipped = np.zeros(shape2d, bool)
    clipped[ys, xs] = best_m[ys, xs]
    return clipped, best_q, int(i > 0), int(touched)
