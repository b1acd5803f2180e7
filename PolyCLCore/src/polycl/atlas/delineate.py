"""The scan's own image draws an organ that the atlas prior only located.

A warped atlas organ lands near the organ, rarely on it: registration between patients is weak on
abdominal organs (a prior kidney overlaps the real one by half or less on a scan from another
hospital). So the prior is used as a user would use it: as the place to click.
:func:`delineate` clicks the prior's centre (the point deepest inside it, in mm) and points
:data:`CLICK_GRID_MM` apart inside it, on its largest slice and on slices spread over its z-range
(:data:`CLICK_FRACTIONS`); answers each click as the interactive session answers a first click
(:func:`polycl.interact.slice_answer.first_answer`: the box SAM is most confident of); keeps the
answers that lie mostly inside the prior (widened by :data:`PRIOR_REACH_MM`); and carries up to :data:`MAX_SEEDS` of them through the prior's
z-range (plus :data:`Z_MARGIN_MM`) with the chain engine and its stop rule: the answer SAM is surest
of, the one that best fits the prior's slice (SAM quality x Dice, the score the pipeline gives a
reference slice against the U-Net) and the next surest. Of the results that are plausible (volume
and HU, :func:`polycl.atlas.prior.plausible`) and agree with this organ's prior better than with any
other organ's, the one with the best 3D Dice with the prior x mean SAM confidence of its slices
wins: SAM carries a real organ with confident answers (validation scan, right kidney: 0.94), a
wrong structure less so (0.77-0.78). The winner is propagated once more from its largest slice. One slice does not
tell the organs apart (a warped spleen can reach over the left kidney, and SAM is surer of the
enhanced kidney there than of the spleen; a warped kidney can lie mostly on fat beside it); their
3D shapes do. When no answer qualifies or no result is plausible, the prior stays the coarse mask.

Everything is in canonical (z, y, x) slice space; spacings are (sx, sy, sz) in mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Clicks on the prior's largest slice and on the slices at these fractions of its z-range (a prior
#: can be off by several centimetres along z: the validation scan's right kidney prior is centred
#: 5 cm above the kidney), at least this far apart (mm)...
CLICK_FRACTIONS = (0.2, 0.4, 0.6, 0.8)
CLICK_SPACING_MM = 10.0
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
#: Seeds propagated at most (the surest answer, the best fitting one, the next surest); two whose 3D
#: results agree at Dice >= :data:`SEEDS_AGREE` end the search.
MAX_SEEDS = 3
SEEDS_AGREE = 0.8
#: The winner is propagated again from its largest slice; that result replaces it when they agree this well.
RESEED_AGREE = 0.7


@dataclass
class Delineation:
    """``mask``: bool (z, y, x) canonical, or None when the prior stays; ``seed``: the seed slice;
    ``quality``: SAM's quality of the seed answer; ``note``: why the prior stayed."""

    mask: np.ndarray | None
    seed: int = -1
    quality: float = 0.0
    note: str = ""


def _click_slices(prior: np.ndarray, sz: float) -> list[int]:
    """The prior's largest slice, then the slices at :data:`CLICK_FRACTIONS` of its z-range, each at
    least :data:`CLICK_SPACING_MM` from those before it."""
    zs = np.flatnonzero(prior.any(axis=(1, 2)))
    picks = [int(np.argmax(prior.reshape(prior.shape[0], -1).sum(axis=1)))]
    for f in CLICK_FRACTIONS:
        k = int(round(zs[0] + f * (zs[-1] - zs[0])))
        if prior[k].any() and all(abs(k - j) * sz >= CLICK_SPACING_MM for j in picks):
            picks.append(k)
    return picks


def _click_points(prior2d: np.ndarray, pixel_mm, centre) -> list[tuple[int, int]]:
    """The prior slice's centre (deepest point, mm), then the points of a :data:`CLICK_GRID_MM` grid inside it."""
    ys, xs = np.nonzero(prior2d)
    gy, gx = (max(1, int(round(CLICK_GRID_MM / p))) for p in pixel_mm)
    grid = [(y, x) for y in range(int(ys.min()) + gy // 2, int(ys.max()) + 1, gy)
            for x in range(int(xs.min()) + gx // 2, int(xs.max()) + 1, gx) if prior2d[y, x]]
    return [tuple(centre(prior2d, pixel_mm))] + grid


def delineate(hu: np.ndarray, prior: np.ndarray, segmenter, spacing_xyz, organ: str = "", report=None,
              others: dict | None = None) -> Delineation:
    """The organ at ``prior`` (bool (z, y, x), canonical like ``hu``), drawn from the image with
    ``segmenter`` (a :class:`~polycl.sam.SliceSegmenter` on ``hu``). See the module docstring.
    ``report``: a :class:`~polycl.progress.Reporter` (progress per seed and slice; cancel checked).
    ``others``: organ -> bool prior of the atlas's other organs on the same grid (a result that agrees
    better with one of them than with ``prior`` is that organ, not this one)."""
    from polycl.atlas.prior import plausible
    from polycl.masks import dice

    sx, sy, sz = (float(v) for v in spacing_xyz)
    prior = prior > 0
    if not prior.any():
        return Delineation(None, note="empty prior")
    answers = _answers(hu, prior, segmenter, (sx, sy, sz), report)
    if not answers:
        return Delineation(None, note="no confident answer inside the prior")
    seeds = _seeds_to_try(answers)
    voxel_ml = sx * sy * sz / 1000.0
    results = []
    for i, (k, answer, quality, _) in enumerate(seeds):
        span = report.span(i / len(seeds), (i + 1) / len(seeds)) if report is not None else None
        out, confidence = _propagate(hu, k, answer, prior, segmenter, (sx, sy, sz), organ, span)
        fit = dice(out, prior)
        if plausible(organ, out, hu, voxel_ml) and all(dice(out, r) <= fit for r in (others or {}).values()):
            results.append((fit * confidence, out, k, quality))
            if len(results) == 2 and dice(results[0][1], results[1][1]) >= SEEDS_AGREE:
                break  # two seeds gave the same organ
    if not results:
        k, _, quality, _ = seeds[0]
        return Delineation(None, k, quality, "the image's organ at the prior is implausible in volume or HU")
    _, out, k, quality = max(results, key=lambda r: r[0])
    # a seed near the organ's pole carries it less well than its largest slice (the paper's reference
    # slice): propagate once more from there, and keep that when it is the same organ
    big = int(np.argmax(out.reshape(out.shape[0], -1).sum(axis=1)))
    if big != k:
        again, _ = _propagate(hu, big, out[big], prior, segmenter, (sx, sy, sz), organ, None)
        if plausible(organ, again, hu, voxel_ml) and dice(again, out) >= RESEED_AGREE:
            out, k = again, big
    return Delineation(out, k, quality)


def _answers(hu, prior, segmenter, spacing_xyz, report) -> list:
    """(slice, answer mask, SAM quality, quality x Dice with the prior's slice) for every click whose
    answer is confident and lies mostly inside the prior."""
    from polycl.interact.robot import centre
    from polycl.interact.slice_answer import SliceContext, first_answer
    from polycl.masks import dice

    sx, sy, sz = spacing_xyz
    out = []
    for k in _click_slices(prior, sz):
        ctx = SliceContext.of(hu[k], (sy, sx))
        near = ndimage.distance_transform_edt(~prior[k], sampling=(sy, sx)) <= PRIOR_REACH_MM
        for yx in _click_points(prior[k], (sy, sx), centre):
            if report is not None:
                report.check()
            answer, quality = first_answer(segmenter, k, ctx, yx)
            if not answer.any() or quality < MIN_QUALITY:
                continue
            if np.count_nonzero(answer & near) >= MIN_INSIDE * np.count_nonzero(answer):
                out.append((k, answer, quality, quality * dice(answer, prior[k])))
    return out


def _seeds_to_try(answers: list) -> list:
    """The answer SAM is surest of, the one that best fits the prior's slice (quality x Dice), and the
    next surest that differs from both; at most :data:`MAX_SEEDS`, distinct."""
    picks = [max(answers, key=lambda a: a[2]), max(answers, key=lambda a: a[3])]
    for a in sorted(answers, key=lambda a: -a[2]):
        picks.append(a)
    out = []
    for a in picks:
        if not any(a[0] == b[0] and _iou(a[1], b[1]) >= 0.5 for b in out):
            out.append(a)
        if len(out) == MAX_SEEDS:
            break
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def _propagate(hu, k: int, answer, prior, segmenter, spacing_xyz, organ: str, report) -> tuple[np.ndarray, float]:
    """``answer`` on slice ``k`` carried through the prior's z-range (+ :data:`Z_MARGIN_MM`) with the
    chain engine and the interactive fill's stop rule: (bool (z, y, x), mean SAM confidence of the
    slices it reached)."""
    from polycl.interact.fill import fill_rule
    from polycl.propagate.chain_engine import ChainEngine
    from polycl.propagate.seeds import Seed

    sx, sy, sz = spacing_xyz
    zs = np.flatnonzero(prior.any(axis=(1, 2)))
    margin = int(np.ceil(Z_MARGIN_MM / sz))
    lo, hi = max(0, int(zs[0]) - margin), min(hu.shape[0] - 1, int(zs[-1]) + margin)
    engine = ChainEngine(segmenter.loaded, device=segmenter.device, segmenter=segmenter)
    out = np.zeros(hu.shape, bool)
    confidences = []
    for i, (j, m, c) in enumerate(engine.run(hu, [Seed(k, answer)], start=lo, end=hi, rule=fill_rule("chain"),
                                             pixel_area_mm2=sx * sy, slice_mm=sz)):
        out[j] |= np.asarray(m, bool)
        if np.any(m):
            confidences.append(float(c))
        if report is not None:
            report(i + 1, hi - lo + 1, f"{organ or 'organ'}: drawing from the image at the atlas prior, slice {j}")
    return out, (float(np.mean(confidences)) if confidences else 0.0)
