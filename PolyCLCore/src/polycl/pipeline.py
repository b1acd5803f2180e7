"""One Segment pipeline under every front end: ``polycl segment``, batch runs and the Slicer module.

Modes (:data:`MODES`; the default is :data:`DEFAULT_MODE`, chosen by the leave-one-scan-out study in
``docs/evaluation.md``):

* ``unet``: the U-Net's mask (probability >= threshold, largest 3D component(s) kept).
* ``refine``: that mask redrawn slice by slice with SAM box prompts (:func:`polycl.sam.refine_volume`).
* ``pipeline``: the paper's whole pipeline, per connected 3D component of the U-Net's mask (two
  kidneys are two components):

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
     slices the U-Net found.
  4. *Guard*: when the fused component agrees with the U-Net's component less than
     ``min_agreement`` (3D Dice), the seed was most likely another organ (a U-Net that is badly
     wrong on this scan); the component is then the SAM-refined U-Net mask (what ``refine`` gives),
     and the report says so.

Every step reuses one :class:`~polycl.sam.SliceSegmenter` per volume, so no slice is embedded twice.
All work is in canonical (LPS) slice order; the returned mask is on the input volume's grid.

Refinement alone and propagation of a user's annotated slice have their own typed entry points,
:func:`refine_case` (:class:`RefineOptions`) and :func:`propagate_case` (:class:`PropagateOptions`),
used by ``polycl refine``, ``polycl propagate`` and the Slicer module alike.

Progress and cancel follow :mod:`polycl.progress`: ``progress(done, total, message)`` (a fraction
of the whole run for :func:`segment_case`) and a :class:`~polycl.progress.CancelToken`; a cancelled
run raises :class:`~polycl.errors.Cancelled` and returns nothing. A GPU that runs out of memory
is retried with smaller batches (:func:`polycl.device.retry_on_oom`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from polycl.device import retry_on_oom
from polycl.errors import InputError
from polycl.progress import CancelToken, Progress, Reporter
from polycl.volume import Volume

MODES = ("unet", "refine", "pipeline")
#: The mode of ``polycl segment``, batch runs and the Slicer module's Segment button.
DEFAULT_MODE = "pipeline"


@dataclass
class SegmentOptions:
    """How to segment. ``sam``: SAM backend of refinement and chaining; ``engine``: propagation
    engine (auto, sam2, chain); ``candidates``: reference-slice candidates per component;
    ``z_margin_mm``: how far (mm) propagation may run beyond the U-Net component's first/last slice;
    ``min_confidence``: propagated slices below this fall back to the refined U-Net slice."""

    mode: str = DEFAULT_MODE
    threshold: float = 0.5
    largest_cc: bool = True
    batch_size: int = 16
    sam: str = "litemedsam"
    engine: str = "auto"
    sam2: str | None = None
    candidates: int = 5
    z_margin_mm: float = 10.0
    min_confidence: float = 0.5
    min_agreement: float = 0.3
    min_slice_agreement: float = 0.2
    device: str = "auto"
    check_ct: bool = True

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown mode '{self.mode}'; use one of {', '.join(MODES)}")
        if not 0 < self.threshold < 1:
            raise InputError(f"threshold must be between 0 and 1, got {self.threshold}")
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
    agreement: float = 1.0  # 3D Dice of the fused component with the U-Net's component
    guarded: bool = False   # the guard replaced the fused component by the refined U-Net mask

    def text(self) -> str:
        text = (f"slices {self.first}..{self.last}, seed {self.seed} (score {self.seed_score:.2f}), "
                f"{self.propagated} propagated + {self.fallback} refined U-Net slices")
        if self.guarded:
            text += (f"; propagation agreed with the U-Net at Dice {self.agreement:.2f} only: "
                     "kept the SAM-refined U-Net mask")
        return text


@dataclass
class SegmentResult:
    """``mask``: uint8 (z, y, x) on the input grid. ``mode`` and ``engine`` say what ran."""

    mask: np.ndarray
    mode: str
    target: str
    engine: str = ""
    components: list[ComponentReport] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    embeddings: int = 0  # SAM image embeddings computed
    encoder: str = ""    # the engine that ran SAM's image encoder (polycl.sam.encoder_engines)
    note: str = ""

    def summary(self) -> str:
        text = f"mode {self.mode}"
        if self.engine:
            text += f", engine {self.engine}"
        if self.components:
            text += f"; {len(self.components)} component(s): " + "; ".join(c.text() for c in self.components)
        if self.embeddings:
            text += f"; {self.embeddings} SAM embeddings" + (f" ({self.encoder})" if self.encoder else "")
        if self.note:
            text += f"; {self.note}"
        return text

    def report_line(self, volume: Volume) -> str:
        """What a batch report or the CLI says of a case: '<target> <ml> ml; <summary>'."""
        ml = float(np.count_nonzero(self.mask)) * float(np.prod(volume.geometry.spacing)) / 1000.0
        return f"{self.target} {ml:.1f} ml; {self.summary()}"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "engine": self.engine, "target": self.target, "note": self.note,
                "embeddings": self.embeddings, "encoder": self.encoder, "seconds": self.seconds,
                "components": [asdict(c) for c in self.components]}


@dataclass
class RefineOptions:
    """How :func:`refine_case` redraws a mask with SAM box prompts. ``sam``: backend
    ('litemedsam' bundled; 'sam_vit_b', ... downloaded by the user, ``checkpoint`` their path);
    ``margin``: pixels around each component's box; ``min_component_px``: smaller pieces are kept
    as they are; ``plain``: no box widening and no guards (SAM's mask is taken as it is)."""

    sam: str = "litemedsam"
    checkpoint: str | None = None
    margin: int = 3
    min_component_px: int = 10
    plain: bool = False
    device: str = "auto"
    check_ct: bool = True

    def validate(self) -> None:
        from polycl.sam.weights import get_checkpoint

        if self.margin < 0 or self.min_component_px < 1:
            raise InputError("margin must be >= 0 and min_component_px >= 1")
        get_checkpoint(self.sam)  # an unknown backend is refused before any work


@dataclass
class PropagateOptions:
    """How :func:`propagate_case` carries annotated slices through a volume. ``engine``: auto
    (SAM 2 when its weights are cached, else chain), sam2 or chain; ``sam2``: SAM 2.1 checkpoint
    name or path; ``stop_after``: K empty slices in a row end a direction (None: run to the limits);
    ``start``/``end``: inclusive limits as input slice indices (Slicer's IJK k); ``keep_seed``: the
    slices named by ``seed_slices`` stay exactly as drawn in the result."""

    engine: str = "auto"
    sam2: str | None = None
    stop_after: int | None = 3
    start: int | None = None
    end: int | None = None
    keep_seed: bool = True
    device: str = "auto"
    check_ct: bool = True

    def validate(self) -> None:
        from polycl.propagate.api import ENGINES

        if self.engine not in ENGINES:
            raise InputError(f"unknown engine '{self.engine}'; use {', '.join(ENGINES)}")
        if self.stop_after is not None and self.stop_after < 1:
            raise InputError(f"stop_after must be >= 1 (or None to run to the limits), got {self.stop_after}")


def refine_case(volume: Volume, mask: np.ndarray | None, options: RefineOptions | None = None, *,
                boxes: Sequence[Sequence[float]] | None = None, progress: Progress | None = None,
                cancel: CancelToken | None = None, segmenter=None):
    """SAM box refinement of ``mask`` (uint8 (z, y, x) on ``volume``'s grid, or None) and/or SAM on
    the user's ``boxes`` [(k, x0, y0, x1, y1)] in array indices (see :func:`polycl.sam.refine_volume`).
    Returns its :class:`~polycl.sam.refine.RefineResult`; an out-of-memory GPU retries one slice at a time."""
    from polycl.device import resolve_device
    from polycl.sam.refine import refine_volume

    opts = options or RefineOptions()
    opts.validate()
    extra = dict(expand_mm=(), min_quality=0.0, min_agreement=0.0) if opts.plain else {}
    device = segmenter.device if segmenter is not None else resolve_device(opts.device)
    return retry_on_oom(lambda bs: refine_volume(
        volume, mask, backend=opts.sam, checkpoint=opts.checkpoint, margin=opts.margin,
        min_component_px=opts.min_component_px, device=opts.device, boxes=boxes, check_ct=opts.check_ct,
        segmenter=segmenter, batch_size=bs, progress=progress, cancel=cancel, **extra),
        8 if device.type == "cuda" else 1)


def propagate_case(volume: Volume, seed: np.ndarray, options: PropagateOptions | None = None, *,
                   seed_slices: Sequence[int] | None = None, progress: Progress | None = None,
                   cancel: CancelToken | None = None, segmenter=None, predictor=None):
    """Carry the annotated slices of ``seed`` (uint8 (z, y, x) on ``volume``'s grid; ``seed_slices``:
    only these input slice indices) through the volume; returns the
    :class:`~polycl.propagate.PropagationResult` (mask on the input grid, per-slice confidence, objects)."""
    from polycl.propagate import propagate_volume

    opts = options or PropagateOptions()
    opts.validate()
    result = propagate_volume(volume, seed, seed_slices=seed_slices, engine=opts.engine, sam2=opts.sam2,
                              start=opts.start, end=opts.end, stop_after=opts.stop_after, device=opts.device,
                              check_ct=opts.check_ct, predictor=predictor, segmenter=segmenter,
                              progress=progress, cancel=cancel)
    if opts.keep_seed and seed_slices is not None:
        seed = np.asarray(seed)
        for k in seed_slices:
            result.mask[int(k)] = seed[int(k)] > 0
    return result


def segment_case(volume: Volume, model, options: SegmentOptions | None = None, *,
                 progress: Progress | None = None, cancel: CancelToken | None = None, segmenter=None,
                 predictor=None) -> SegmentResult:
    """Segment ``volume`` (CT in HU) with ``model`` (a name, path or :class:`~polycl.inference.LoadedModel`).

    ``segmenter``: a :class:`~polycl.sam.SliceSegmenter` on the canonical volume to reuse (its
    embeddings are kept for later prompts); ``predictor``: a loaded SAM 2 video predictor.
    Bad input raises before any work; an empty U-Net mask returns an empty mask with a note.
    ``progress`` sees the fraction of the whole run (the U-Net is the first tenth outside ``unet`` mode).
    """
    from polycl.inference import LoadedModel, load_model, predict_probabilities
    from polycl.masks import largest_components
    from polycl.preprocess import canonical_spacing, from_canonical, to_canonical
    from polycl.validate import require_ct

    opts = options or SegmentOptions()
    opts.validate()
    if opts.check_ct:
        require_ct(volume)
    if not isinstance(model, LoadedModel):
        model = load_model(model, opts.device)
    report = Reporter(progress, cancel, cancelled_message="segmentation cancelled; nothing was changed")
    unet_report = report.span(0.0, 1.0 if opts.mode == "unet" else 0.1)
    sam_report = report.span(0.1, 1.0)
    t0 = time.perf_counter()
    hu = to_canonical(volume)
    sx, sy, sz = canonical_spacing(volume)
    prob = retry_on_oom(lambda bs: predict_probabilities(model, hu, batch_size=bs, spacing_yx=(sy, sx),
                                                         progress=unet_report), opts.batch_size)
    coarse = (prob >= opts.threshold).astype(np.uint8)
    if opts.largest_cc and coarse.any():
        coarse = largest_components(coarse, keep=model.components, min_fraction=0.2)
    result = SegmentResult(coarse, opts.mode, model.target, seconds={"unet": time.perf_counter() - t0})
    if opts.mode == "unet" or not coarse.any():
        if not coarse.any():
            result.note = f"the U-Net found no {model.target or 'organ'}"
        result.mask = from_canonical(coarse, volume)
        return result

    if segmenter is None:
        from polycl.propagate.chain_engine import MAX_CACHED_SLICES
        from polycl.sam import SliceSegmenter

        segmenter = SliceSegmenter(hu, backend=opts.sam, device=opts.device,
                                   cache_size=min(hu.shape[0], MAX_CACHED_SLICES))
    elif segmenter.array.shape != hu.shape:
        raise InputError("the segmenter was made for another volume or orientation")
    before = segmenter.embeddings_computed
    t1 = time.perf_counter()
    if opts.mode == "refine":
        from polycl.sam.refine import refine_volume

        refined = refine_volume(volume, from_canonical(coarse, volume), backend=opts.sam, device=opts.device,
                                segmenter=segmenter, check_ct=False, progress=sam_report)
        result.mask = refined.mask
        result.note = refined.stats.summary()
    else:
        out, reports, engine = _pipeline(hu, coarse, (sx, sy, sz), segmenter, opts, sam_report, predictor)
        result.mask, result.components, result.engine = from_canonical(out, volume), reports, engine
    result.seconds["sam"] = time.perf_counter() - t1
    result.embeddings = segmenter.embeddings_computed - before
    result.encoder = segmenter.loaded.encoder.name if result.embeddings else ""
    sam_report(1, 1, "done")
    return result


def _pipeline(hu, coarse, spacing, segmenter, opts: SegmentOptions, sam_report: Reporter, predictor):
    """Seed choice, propagation and fusion per 3D component; returns (canonical mask, reports, engine)."""
    from skimage.measure import label

    from polycl.propagate.api import EngineChoice, choose_engine, default_rule, make_engine
    from polycl.propagate.seeds import Seed
    from polycl.sam.refine import mask_dice

    sx, sy, sz = spacing
    lab, n = label(coarse > 0, connectivity=3, return_num=True)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = np.argsort(sizes)[::-1]
    if predictor is not None and opts.engine in ("auto", "sam2"):
        choice = EngineChoice("sam2", "a ready SAM 2 predictor was given", getattr(predictor, "polycl_label", ""))
    else:
        choice = choose_engine(opts.engine, opts.sam2)
    engine = make_engine(choice, device=opts.device, sam2=opts.sam2, predictor=predictor, refiner=segmenter.loaded,
                         segmenter=segmenter)
    rule = default_rule(choice.name)
    margin = int(math.ceil(opts.z_margin_mm / sz))
    z = hu.shape[0]
    out = np.zeros_like(coarse, dtype=np.uint8)
    reports = []
    comps = [lab == i + 1 for i in order]
    spans = [(int(nz[0]), int(nz[-1])) for nz in (np.flatnonzero(c.any(axis=(1, 2))) for c in comps)]
    total = sum(min(z - 1, b + margin) - max(0, a - margin) + 1 + opts.candidates for a, b in spans)
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        sam_report(done, total, message)

    for ci, (comp, (first, last)) in enumerate(zip(comps, spans)):
        report = ComponentReport(first, last)
        seed_k, seed_mask, report.seed_score, report.candidates = _choose_seed(
            segmenter, comp, (sx, sy), opts.candidates, lambda: tick(f"component {ci + 1}: reference slice"))
        report.seed = seed_k
        lo, hi = max(0, first - margin), min(z - 1, last + margin)
        propagated: dict[int, tuple[np.ndarray, float]] = {}
        for k, m, conf in engine.run(hu, [Seed(seed_k, seed_mask)], start=lo, end=hi, rule=rule,
                                     pixel_area_mm2=sx * sy):
            propagated[int(k)] = (np.asarray(m, bool), float(conf))
            tick(f"component {ci + 1}: propagating")
        fused = np.zeros_like(out)
        refined: dict[int, np.ndarray] = {}

        def refined_slice(k: int) -> np.ndarray:
            if k not in refined:
                refined[k] = _refined(segmenter, k, comp[k], (sx, sy))
            return refined[k]

        for k in range(lo, hi + 1):
            m, conf = propagated.get(k, (None, 0.0))
            if k == seed_k:
                fused[k][seed_mask] = 1
            elif (m is not None and m.any() and conf >= opts.min_confidence
                  and (not comp[k].any() or mask_dice(m, comp[k]) >= opts.min_slice_agreement)):
                fused[k][m] = 1
                report.propagated += 1
            elif comp[k].any():
                fused[k][refined_slice(k)] = 1
                report.fallback += 1
        report.agreement = mask_dice(fused > 0, comp)
        if report.agreement < opts.min_agreement:
            report.guarded = True
            fused[:] = 0
            for k in range(first, last + 1):
                if comp[k].any():
                    fused[k][refined_slice(k)] = 1
        out |= fused
        reports.append(report)
    return out, reports, f"{choice.name} ({choice.detail})" if choice.detail else choice.name


def _candidate_slices(nonempty: np.ndarray, n: int) -> list[int]:
    """``n`` slices spread over the middle 40 % of a component's slices, the middle slice first."""
    mid = int(nonempty[len(nonempty) // 2])
    picks = [mid] + [int(nonempty[int(round(q * (len(nonempty) - 1)))]) for q in np.linspace(0.3, 0.7, n)]
    return list(dict.fromkeys(picks))[:n]


def _refine_2d(segmenter, k: int, coarse2d: np.ndarray, spacing_xy):
    from polycl.sam.refine import component_boxes, refine_slice

    segmenter.set_slice(k)
    comps, _ = component_boxes(coarse2d, 3, 10)
    if not comps:
        return None
    return refine_slice(segmenter, comps, spacing_xy)


def _refined(segmenter, k: int, coarse2d: np.ndarray, spacing_xy) -> np.ndarray:
    """The U-Net slice refined by SAM with the refiner's guards (the coarse slice where SAM is unsure)."""
    r = _refine_2d(segmenter, k, coarse2d, spacing_xy)
    return coarse2d > 0 if r is None else r.apply(coarse2d)


def _choose_seed(segmenter, comp: np.ndarray, spacing_xy, n: int, tick):
    """(slice, seed mask, score, candidates): the candidate where SAM is confident and agrees with the U-Net."""
    from polycl.sam.refine import mask_dice

    nonempty = np.flatnonzero(comp.any(axis=(1, 2)))
    best = None
    cands = []
    for k in _candidate_slices(nonempty, n):
        r = _refine_2d(segmenter, k, comp[k], spacing_xy)
        tick()
        if r is None:
            continue
        mask = r.apply(comp[k])
        agreement = mask_dice(mask, comp[k])
        score = r.quality * agreement
        cands.append((k, round(r.quality, 3), round(agreement, 3)))
        if best is None or score > best[2]:
            best = (k, mask, score)
    if best is None:  # every candidate piece was tiny: the middle slice as the U-Net drew it
        k = int(nonempty[len(nonempty) // 2])
        return k, comp[k], 0.0, cands
    return best[0], best[1], float(best[2]), cands
