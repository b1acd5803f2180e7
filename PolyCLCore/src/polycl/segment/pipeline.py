"""The paper's whole pipeline, Segment's ``pipeline`` mode (:func:`polycl.segment.run` calls
:func:`run_pipeline` with :class:`PipelineOptions`), per connected 3D component of the coarse mask
(the U-Net's or the atlas prior's; two kidneys are two components):

1. *Reference slice*: candidate slices spread over the middle of the component (the paper's
   middle slice among them) are SAM-refined; the one where SAM is confident and agrees with the
   U-Net best (score = SAM quality x Dice(SAM, U-Net)) becomes the seed.
2. *Propagation* of that seed through the component's z-extent plus ``z_margin_mm`` (SAM 2 when
   its weights are cached, else LiteMedSAM chained slice to slice, with its stop rule).
3. *Fusion*: a propagated slice is kept where its confidence is at least ``min_confidence`` and,
   on slices where the U-Net found the component, it overlaps the U-Net's slice (2D Dice at least
   ``min_slice_agreement``: a propagation that drifted onto another organ is not trusted);
   elsewhere inside the component's extent (propagation stopped early, drifted, or SAM was
   unsure) the SAM-refined U-Net slice is used. So a propagation that stops early cannot lose the
   slices the U-Net found. On thin slices, an untrusted slice that the chain stepped over (never
   embedded) lying between two filled slices is interpolated from them instead, so that the
   fallback does not embed slices the walk saved (a ~100-slice liver: <= 50 embeddings).
4. *Guard*: when the fused component agrees with the U-Net's component less than
   ``min_agreement`` (3D Dice), the seed was most likely another organ (a U-Net that is badly
   wrong on this scan); the component is then the SAM-refined U-Net mask (what ``refine`` gives),
   and the report says so.

Every step reuses one :class:`~polycl.sam.SliceSegmenter` per volume, so no slice is embedded twice.
All work here is on the canonical (LPS) array. Internal to Segment: the public entry points are
:func:`polycl.segment.run`, :func:`polycl.refine.run` and :func:`polycl.propagate.run`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from polycl.errors import InputError
from polycl.masks import component_boxes, components_by_size, dice
from polycl.progress import Reporter

__all__ = ["ComponentReport", "PipelineOptions", "run_pipeline"]


@dataclass
class PipelineOptions:
    """The pipeline's own settings, held by :class:`polycl.segment.SegmentOptions` (``pipeline``).

    ``candidates``: reference-slice candidates per component; ``z_margin_mm``: how far (mm)
    propagation may run beyond the component's first/last slice; ``min_confidence``: propagated
    slices below this fall back to the refined coarse slice; ``min_slice_agreement`` /
    ``min_agreement``: 2D / 3D Dice with the coarse mask below which propagation is not trusted
    (steps 3 and 4 above). The engine, device and SAM box settings are Segment's, passed to
    :func:`run_pipeline` beside these."""

    candidates: int = 5
    z_margin_mm: float = 10.0
    min_confidence: float = 0.5
    min_agreement: float = 0.3
    min_slice_agreement: float = 0.2

    def __post_init__(self) -> None:
        if (self.candidates < 1 or self.z_margin_mm < 0 or not 0 <= self.min_confidence <= 1
                or not 0 <= self.min_agreement <= 1 or not 0 <= self.min_slice_agreement <= 1):
            raise InputError("candidates must be >= 1, z_margin_mm >= 0 and min_confidence, min_agreement, "
                             "min_slice_agreement in 0..1")


@dataclass
class ComponentReport:
    """What the pipeline did with one 3D component (canonical slice indices, inferior -> superior)."""

    first: int
    last: int
    seed: int = -1
    seed_score: float = 0.0
    candidates: list = field(default_factory=list)  # [(slice, SAM quality, Dice with the U-Net)]
    propagated: int = 0   # slices taken from the propagation
    fallback: int = 0     # slices taken from the refined U-Net mask (low confidence / not reached)
    interpolated: int = 0  # untrusted slices the walk stepped over, interpolated from their filled neighbours
    agreement: float = 1.0  # 3D Dice of the fused component with the U-Net's component
    guarded: bool = False   # the guard replaced the fused component by the refined U-Net mask
    coarse: str = "U-Net"   # what the coarse mask came from, as the text names it (or "atlas prior")

    def text(self) -> str:
        text = (f"slices {self.first}..{self.last}, seed {self.seed} (score {self.seed_score:.2f}), "
                f"{self.propagated} propagated + {self.fallback} refined {self.coarse} slices")
        if self.interpolated:
            text += f" + {self.interpolated} interpolated between them"
        if self.guarded:
            text += (f"; propagation agreed with the {self.coarse} at Dice {self.agreement:.2f} only: "
                     f"kept the SAM-refined {self.coarse} mask")
        return text


def run_pipeline(hu, coarse, spacing, segmenter, sam_report: Reporter, opts: PipelineOptions | None = None, *,
                 engine: str = "auto", sam2: str | None = None, device: str = "auto", predictor=None,
                 box: tuple[int, int] = (3, 10), coarse_name: str = "U-Net"):
    """Seed choice, propagation and fusion per 3D component of ``coarse`` (canonical (z, y, x) uint8)
    on ``hu`` (canonical HU) with ``spacing`` (sx, sy, sz) mm; returns (canonical mask, reports, engine).

    ``engine`` (auto, sam2, chain), ``sam2`` (its checkpoint), ``device`` and ``predictor`` (a loaded
    SAM 2 video predictor) choose the propagation; ``box``: (margin px, smallest piece px) of SAM's
    boxes around the coarse mask's 2D pieces (the refiner's settings); ``coarse_name``: what the
    reports call the coarse mask."""
    from polycl.propagate.chain_engine import interpolate_masks, slice_step
    from polycl.propagate.seeds import Seed
    from polycl.propagate import choose_engine, default_rule, make_engine

    opts = opts or PipelineOptions()
    sx, sy, sz = spacing
    choice = choose_engine(engine, sam2, predictor)
    # the chain's box margin: the refiner's pixels (box[0]), tighter than the interactive fill's 9 mm:
    # here the U-Net's refined slices fill what a tight propagation misses, and a loose box lets the
    # propagation leak into the liver's neighbours on thin slices (validation scan: 0.96 -> 0.94)
    propagation = make_engine(choice, device=device, sam2=sam2, predictor=predictor, segmenter=segmenter,
                              margin_px=box[0])
    rule = default_rule(choice.name)
    step = slice_step(sz) if choice.name == "chain" else 1
    margin = int(math.ceil(opts.z_margin_mm / sz))
    z = hu.shape[0]
    out = np.zeros_like(coarse, dtype=np.uint8)
    reports = []
    comps = components_by_size(coarse)
    spans = [(int(nz[0]), int(nz[-1])) for nz in (np.flatnonzero(c.any(axis=(1, 2))) for c in comps)]
    total = sum(min(z - 1, b + margin) - max(0, a - margin) + 1 + opts.candidates for a, b in spans)
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        sam_report(done, total, message)

    for ci, (comp, (first, last)) in enumerate(zip(comps, spans)):
        report = ComponentReport(first, last, coarse=coarse_name)
        seed_k, seed_mask, report.seed_score, report.candidates = _choose_seed(
            segmenter, comp, (sx, sy), box, opts.candidates, lambda: tick(f"component {ci + 1}: reference slice"), step)
        report.seed = seed_k
        lo, hi = _walk_range(first - margin, last + margin, seed_k, step, z)
        propagated: dict[int, tuple[np.ndarray, float]] = {}
        for k, m, conf in propagation.run(hu, [Seed(seed_k, seed_mask)], start=lo, end=hi, rule=rule,
                                          pixel_area_mm2=sx * sy, slice_mm=sz):
            propagated[int(k)] = (np.asarray(m, bool), float(conf))
            tick(f"component {ci + 1}: propagating")
        fused = np.zeros_like(out)
        refined: dict[int, np.ndarray] = {}

        def refined_slice(k: int) -> np.ndarray:
            if k not in refined:
                refined[k] = _refined(segmenter, k, comp[k], (sx, sy), box)
            return refined[k]

        stepped_over = []  # untrusted slices the walk did not embed: filled from their neighbours below
        for k in range(lo, hi + 1):
            m, conf = propagated.get(k, (None, 0.0))
            if k == seed_k:
                fused[k][seed_mask] = 1
            elif (m is not None and m.any() and conf >= opts.min_confidence
                  and (not comp[k].any() or dice(m, comp[k]) >= opts.min_slice_agreement)):
                fused[k][m] = 1
                report.propagated += 1
            elif comp[k].any():
                if step > 1 and not segmenter.is_cached(k):
                    stepped_over.append(k)
                else:
                    fused[k][refined_slice(k)] = 1
                    report.fallback += 1
        pending = set(stepped_over)
        for k in stepped_over:  # between two filled slices: interpolated, as the chain fills what it steps over
            a = next((j for j in range(k - 1, lo - 1, -1) if j not in pending), None)
            b = next((j for j in range(k + 1, hi + 1) if j not in pending), None)
            if a is not None and b is not None and fused[a].any() and fused[b].any():
                fused[k][interpolate_masks(fused[a], fused[b], (k - a) / (b - a))] = 1
                report.interpolated += 1
            else:
                fused[k][refined_slice(k)] = 1
                report.fallback += 1
        report.agreement = dice(fused > 0, comp)
        if report.agreement < opts.min_agreement:
            report.guarded = True
            fused[:] = 0
            for k in range(first, last + 1):
                if comp[k].any():
                    fused[k][refined_slice(k)] = 1
        out |= fused
        reports.append(report)
    return out, reports, f"{choice.name} ({choice.detail})" if choice.detail else choice.name


def _walk_range(lo: int, hi: int, seed: int, step: int, z: int) -> tuple[int, int]:
    """The slices ``lo..hi`` widened to the chain's walk grid (slices a multiple of ``step`` from the
    ``seed``), within the volume's ``z`` slices: the walk's last slice is then one it steps to, not an
    off-grid slice embedded for the range's end alone."""
    lo = seed - step * int(math.ceil((seed - lo) / step)) if lo < seed else lo
    hi = seed + step * int(math.ceil((hi - seed) / step)) if hi > seed else hi
    return max(0, lo), min(z - 1, hi)


def _candidate_slices(nonempty: np.ndarray, n: int, step: int = 1) -> list[int]:
    """``n`` slices spread over the middle 40 % of a component's slices, the middle slice first, each a
    multiple of ``step`` slices from it: whichever becomes the seed, the others lie on the slices the
    chain walks from it (:func:`polycl.propagate.chain_engine.slice_step`), so none is embedded for
    the seed choice alone."""
    mid = int(nonempty[len(nonempty) // 2])
    picks = [mid] + [int(nonempty[int(round(q * (len(nonempty) - 1)))]) for q in np.linspace(0.3, 0.7, n)]
    picks = [mid + step * int(round((k - mid) / step)) for k in picks]
    return [k for k in dict.fromkeys(picks) if nonempty[0] <= k <= nonempty[-1]][:n]


def _refine_2d(segmenter, k: int, coarse2d: np.ndarray, spacing_xy, box: tuple[int, int]):
    """SAM with the refiner's guards on the 2D components of ``coarse2d`` (canonical slice ``k``), or None."""
    from polycl.sam.slice_refine import refine_slice

    segmenter.set_slice(k)
    comps, _ = component_boxes(coarse2d, *box)
    if not comps:
        return None
    return refine_slice(segmenter, comps, spacing_xy)


def _refined(segmenter, k: int, coarse2d: np.ndarray, spacing_xy, box: tuple[int, int]) -> np.ndarray:
    """The U-Net slice refined by SAM with the refiner's guards (the coarse slice where SAM is unsure)."""
    r = _refine_2d(segmenter, k, coarse2d, spacing_xy, box)
    return coarse2d > 0 if r is None else r.apply(coarse2d)


def _choose_seed(segmenter, comp: np.ndarray, spacing_xy, box: tuple[int, int], candidates: int, tick,
                 step: int = 1):
    """(slice, seed mask, score, candidates): the candidate where SAM is confident and agrees with the U-Net."""
    nonempty = np.flatnonzero(comp.any(axis=(1, 2)))
    best = None
    cands = []
    for k in _candidate_slices(nonempty, candidates, step):
        r = _refine_2d(segmenter, k, comp[k], spacing_xy, box)
        tick()
        if r is None:
            continue
        mask = r.apply(comp[k])
        agreement = dice(mask, comp[k])
        score = r.quality * agreement
        cands.append((k, round(r.quality, 3), round(agreement, 3)))
        if best is None or score > best[2]:
            best = (k, mask, score)
    if best is None:  # every candidate piece was tiny: the middle slice as the U-Net drew it
        k = int(nonempty[len(nonempty) // 2])
        return k, comp[k], 0.0, cands
    return best[0], best[1], float(best[2]), cands
