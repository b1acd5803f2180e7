"""The scan's own image draws an organ that the atlas prior only located.

A warped atlas organ lands near the organ, rarely on it: registration between patients is weak on
abdominal organs (a prior kidney overlaps the real one by half or less on a scan from another
hospital). So the prior is used as a user would use it: as the place to click.
:func:`delineate` clicks the prior's centre (the point deepest inside it, in mm) and points
:data:`CLICK_GRID_MM` apart inside it, on its largest slice and on the slices :data:`CLICK_SPACING_MM`
above and below; answers each click as the interactive session answers a first click
(:func:`polycl.interact.slice_answer.first_answer`: the box SAM is most confident of); keeps the
answer SAM is surest of among those that lie mostly inside the prior (widened by
:data:`PRIOR_REACH_MM`); and carries it through the prior's z-range
(plus :data:`Z_MARGIN_MM`) with the chain engine and its stop rule. Where no answer qualifies, or the
result is implausible for the organ (:func:`polycl.atlas.prior.plausible`), the prior stays the
coarse mask.

Everything is in canonical (z, y, x) slice space; spacings are (sx, sy, sz) in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Clicks on the prior's largest slice and this far (mm) above and below it...
CLICK_SPACING_MM = 15.0
#: ... at the prior's centre and on a grid this fine (mm) inside it: the prior is often off by a
#: centimetre or two, and its centre may lie on fat beside the organ (validation scan: right kidney).
CLICK_GRID_MM = 15.0
#: An answer counts when at least :data:`MIN_INSIDE` of it lies within this distance (mm) of the prior.
PRIOR_REACH_MM = 10.0
MIN_INSIDE = 0.6
#: An answer SAM is less sure of than this is not a seed.
MIN_QUALITY = 0.7
#: The propagation may run this far (mm) beyond the prior's first and last slice.
Z_MARGIN_MM = 20.0


@dataclass
class Delineation:
    """``mask``: bool (z, y, x) canonical, or None when the prior stays; ``seed``: the seed slice;
    ``quality``: SAM's quality of the seed answer; ``note``: why the prior stayed."""

    mask: np.ndarray | None
    seed: int = -1
    quality: float = 0.0
    note: str = ""


def _click_slices(prior: np.ndarray, sz: float) -> list[int]:
    zs = np.flatnonzero(prior.any(axis=(1, 2)))
    mid = int(np.argmax(prior.reshape(prior.shape[0], -1).sum(axis=1)))
    d = max(1, int(round(CLICK_SPACING_MM / sz)))
    return [k for k in dict.fromkeys((mid, mid - d, mid + d)) if zs[0] <= k <= zs[-1] and prior[k].any()]


def _click_points(prior2d: np.ndarray, pixel_mm, centre) -> list[tuple[int, int]]:
    """The prior slice's centre (deepest point, mm), then the points of a :data:`CLICK_GRID_MM` grid inside it."""
    ys, xs = np.nonzero(prior2d)
    gy, gx = (max(1, int(round(CLICK_GRID_MM / p))) for p in pixel_mm)
    grid = [(y, x) for y in range(int(ys.min()) + gy // 2, int(ys.max()) + 1, gy)
            for x in range(int(xs.min()) + gx // 2, int(xs.max()) + 1, gx) if prior2d[y, x]]
    return [tuple(centre(prior2d, pixel_mm))] + grid


def delineate(hu: np.ndarray, prior: np.ndarray, segmenter, spacing_xyz, organ: str = "", report=None) -> Delineation:
    """The organ at ``prior`` (bool (z, y, x), canonical like ``hu``), drawn from the image with
    ``segmenter`` (a :class:`~polycl.sam.SliceSegmenter` on ``hu``). See the module docstring.
    ``report``: a :class:`~polycl.progress.Reporter` (progress per slice; cancel checked between slices)."""
    from polycl.atlas.prior import plausible
    from polycl.interact.robot import centre
    from polycl.interact.slice_answer import SliceContext, first_answer
    from polycl.propagate.chain_engine import ChainEngine
    from polycl.propagate.seeds import Seed

    sx, sy, sz = (float(v) for v in spacing_xyz)
    prior = prior > 0
    if not prior.any():
        return Delineation(None, note="empty prior")
    best = None
    for k in _click_slices(prior, sz):
        ctx = SliceContext.of(hu[k], (sy, sx))
        near = ndimage.distance_transform_edt(~prior[k], sampling=(sy, sx)) <= PRIOR_REACH_MM
        for yx in _click_points(prior[k], (sy, sx), centre):
            answer, quality = first_answer(segmenter, k, ctx, yx)
            if not answer.any() or quality < MIN_QUALITY or (best is not None and quality <= best[2]):
                continue
            if np.count_nonzero(answer & near) >= MIN_INSIDE * np.count_nonzero(answer):
                best = (k, answer, quality)
    if best is None:
        return Delineation(None, note="no confident answer inside the prior")
    k, answer, quality = best
    zs = np.flatnonzero(prior.any(axis=(1, 2)))
    margin = int(np.ceil(Z_MARGIN_MM / sz))
    lo, hi = max(0, int(zs[0]) - margin), min(hu.shape[0] - 1, int(zs[-1]) + margin)
    from polycl.interact.fill import fill_rule

    engine = ChainEngine(segmenter.loaded, device=segmenter.device, segmenter=segmenter)
    out = np.zeros(hu.shape, bool)
    for i, (j, m, _) in enumerate(engine.run(hu, [Seed(k, answer)], start=lo, end=hi, rule=fill_rule("chain"),
                                             pixel_area_mm2=sx * sy, slice_mm=sz)):
        out[j] |= np.asarray(m, bool)
        if report is not None:
            report(i + 1, hi - lo + 1, f"{organ or 'organ'}: drawing from the image at the atlas prior, slice {j}")
    if not plausible(organ, out, hu, sx * sy * sz / 1000.0):
        return Delineation(None, k, quality, "the image's organ at the prior is implausible in volume or HU")
    return Delineation(out, k, quality)
