"""Segment: a CT volume in, an organ mask out; one entry point, :func:`run`, under every front end
(``polycl segment``, batch runs, the demo and the Slicer module), configured by
:class:`SegmentOptions`, returning a :class:`SegmentResult`.

Modes (:data:`MODES`; the default is :data:`DEFAULT_MODE`, chosen by the leave-one-scan-out study in
``docs/evaluation.md``):

* ``unet``: the U-Net's mask (probability >= threshold, largest 3D component(s) kept).
* ``refine``: that mask redrawn slice by slice with SAM box prompts (:func:`polycl.refine.run`).
* ``pipeline``: the paper's whole pipeline per connected 3D component of the U-Net's mask:
  reference slice, propagation, fusion and guard (:mod:`polycl.segment.pipeline`, configured by the
  :class:`~polycl.segment.pipeline.PipelineOptions` that ``SegmentOptions.pipeline`` holds).

The volume is put in canonical (LPS) order once per call (or not at all when a
:class:`~polycl.sam.SliceSegmenter` on its canonical array is given); every step works on that
array and reuses one segmenter, so no slice is embedded twice. The returned mask is on the input
volume's grid.

Progress and cancel follow :mod:`polycl.progress`: ``progress(done, total, message)`` sees the
fraction of the whole run (the U-Net is the first tenth outside ``unet`` mode); a cancelled run
raises :class:`~polycl.errors.Cancelled` and returns nothing. A GPU that runs out of memory is
retried with smaller batches (:func:`polycl.device.retry_on_oom`, here and inside refine).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from polycl.errors import InputError
from polycl.progress import CancelToken, Progress, Reporter
from polycl.segment.pipeline import PipelineOptions, run_pipeline
from polycl.volume import Volume

MODES = ("unet", "refine", "pipeline")
#: The mode of ``polycl segment``, batch runs and the Slicer module's Segment button.
DEFAULT_MODE = "pipeline"


@dataclass
class SegmentOptions:
    """How to segment; checked when made (and again by :func:`run`).

    ``threshold``: U-Net probability threshold; ``largest_cc``: keep the model's number of largest
    3D components; ``batch_size``: U-Net slices per forward pass; ``sam_model``: the SAM checkpoint
    of refinement and chaining; ``margin`` (px) and ``min_component_px``: SAM boxes around 2D
    components, smaller components are left as the U-Net drew them; ``engine``: propagation engine
    (auto, sam2, chain), ``sam2`` its checkpoint; ``pipeline``: the pipeline mode's own settings
    (:class:`~polycl.segment.pipeline.PipelineOptions`: reference-slice candidates, z margin,
    confidence and agreement thresholds)."""

    mode: str = DEFAULT_MODE
    threshold: float = 0.5
    largest_cc: bool = True
    batch_size: int = 16
    sam_model: str = "litemedsam"
    margin: int = 3
    min_component_px: int = 10
    engine: str = "auto"
    sam2: str | None = None
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    device: str = "auto"
    check_ct: bool = True
    prior: str = "auto"  # atlas location prior: auto, on, off (see polycl.atlas.targets)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.mode not in MODES:
            raise InputError(f"unknown mode '{self.mode}'; use one of {', '.join(MODES)}")
        if not 0 < self.threshold < 1:
            raise InputError(f"threshold must be between 0 and 1, got {self.threshold}")
        if self.batch_size < 1 or self.margin < 0 or self.min_component_px < 1:
            raise InputError("batch_size must be >= 1, margin >= 0 and min_component_px >= 1")
        if not isinstance(self.pipeline, PipelineOptions):
            raise InputError("pipeline must be a polycl.segment.pipeline.PipelineOptions")
        if self.mode != "unet":
            from polycl.sam.weights import get_checkpoint

            get_checkpoint(self.sam_model)  # an unknown SAM model is refused before any work
        if self.prior not in ("auto", "on", "off"):
            raise InputError(f"prior must be auto, on or off, got '{self.prior}'")


@dataclass
class SegmentResult:
    """``mask``: uint8 (z, y, x) on the input grid. ``mode`` and ``engine`` say what ran;
    ``components``: :class:`polycl.segment.pipeline.ComponentReport` per 3D component (pipeline mode)."""

    mask: np.ndarray
    mode: str
    target: str
    engine: str = ""
    components: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)
    embeddings: int = 0  # SAM image embeddings computed
    encoder: str = ""    # the engine that ran SAM's image encoder (polycl.sam.encoder_engines)
    note: str = ""
    sources: list = field(default_factory=list)  # per object: organ, source unet/prior/both (polycl.atlas)
    volume_ml: float = 0.0  # the mask's volume (ml)
    warning: str = ""       # set when that volume is implausible for the target (polycl.anatomy)

    def summary(self) -> str:
        text = f"WARNING: {self.warning}; " if self.warning else ""
        text += f"mode {self.mode}"
        if self.engine:
            text += f", engine {self.engine}"
        if self.components:
            text += f"; {len(self.components)} component(s): " + "; ".join(c.text() for c in self.components)
        if self.embeddings:
            text += f"; {self.embeddings} SAM embeddings" + (f" ({self.encoder})" if self.encoder else "")
        if self.note:
            text += f"; {self.note}"
        if self.sources:
            from polycl.atlas.targets import sources_text

            text += f"; {sources_text(self.sources)}"
        return text

    def report_line(self) -> str:
        """What a batch report or the CLI says of a case: '<target> <ml> ml; <summary>'."""
        return f"{self.target} {self.volume_ml:.1f} ml; {self.summary()}"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "engine": self.engine, "target": self.target, "note": self.note,
                "volume_ml": self.volume_ml, "warning": self.warning,
                "embeddings": self.embeddings, "encoder": self.encoder, "seconds": self.seconds,
                "components": [asdict(c) for c in self.components], "sources": self.sources}


def run(volume: Volume, model, options: SegmentOptions | None = None, *, progress: Progress | None = None,
        cancel: CancelToken | None = None, segmenter=None, predictor=None) -> SegmentResult:
    """Segment ``volume`` (CT in HU) with ``model``: a registry name, a checkpoint path, an atlas-based
    target ``atlas:<organ>`` (no network), or one loaded by :func:`polycl.catalogue.load`.

    ``segmenter``: a :class:`~polycl.sam.SliceSegmenter` on the volume's canonical array to reuse
    (its array is then the U-Net's input too, and its embeddings are kept for later prompts);
    ``predictor``: a loaded SAM 2 video predictor. Bad input raises before any work; an empty
    U-Net mask returns an empty mask with a note. A volume that is implausible for the target
    (:mod:`polycl.anatomy`) sets ``warning``, which the summary, report line and panel show.
    """
    from polycl.anatomy import volume_warning

    result = _segment(volume, model, options, progress=progress, cancel=cancel, segmenter=segmenter,
                      predictor=predictor)
    result.volume_ml = float(np.count_nonzero(result.mask)) * volume.geometry.voxel_ml
    result.warning = volume_warning(result.target, result.volume_ml) or ""
    return result


def _segment(volume: Volume, model, options, *, progress, cancel, segmenter, predictor) -> SegmentResult:
    from polycl import catalogue
    from polycl.atlas.targets import AtlasTarget, apply_prior
    from polycl.device import retry_on_oom
    from polycl.inference import predict_probabilities
    from polycl.masks import largest_components
    from polycl.orientation import orientation
    from polycl.validate import require_ct

    opts = options or SegmentOptions()
    opts.validate()
    if opts.check_ct:
        require_ct(volume)
    o = orientation(volume)
    if segmenter is not None and segmenter.array.shape != o.canonical_shape:
        raise InputError("the segmenter was made for another volume or orientation")
    model = catalogue.load(model, opts.device)  # a name, a path, 'atlas:<organ>' or an already loaded one
    report = Reporter(progress, cancel, cancelled_message="segmentation cancelled; nothing was changed")
    # the bar: U-Net, then the atlas prior (registration), then SAM; each stage moves it forward only
    unet_end, prior_end = (0.7, 1.0) if opts.mode == "unet" else (0.1, 0.3)
    unet_report = report.span(0.0, unet_end)
    sam_report = report.span(prior_end, 1.0)
    t0 = time.perf_counter()
    hu = segmenter.array if segmenter is not None else o.to_canonical(volume.array)  # the one reorientation
    sx, sy, sz = o.spacing_xyz
    atlas_target = isinstance(model, AtlasTarget)  # no network: the atlas prior is the coarse mask
    prob = np.zeros(hu.shape, np.float32) if atlas_target else retry_on_oom(
        lambda bs: predict_probabilities(model, hu, batch_size=bs, spacing_yx=(sy, sx), progress=unet_report),
        opts.batch_size)
    coarse = (prob >= opts.threshold).astype(np.uint8)
    if opts.largest_cc and coarse.any():
        coarse = largest_components(coarse, keep=model.components, min_fraction=0.2)
    # --- atlas location prior: all logic in polycl.atlas.targets ---
    prior = apply_prior(volume, hu, coarse, model, opts.prior, progress=report.span(unet_end, prior_end), cancel=cancel)
    coarse = prior.coarse
    # --- end of the atlas prior ---
    result = SegmentResult(coarse, opts.mode, model.target, seconds={"unet": time.perf_counter() - t0},
                           sources=prior.sources)
    if opts.mode == "unet" or not coarse.any():
        if not coarse.any():
            result.note = f"the U-Net found no {model.target or 'organ'}"
        result.mask = o.from_canonical(coarse)
        report(1, 1, "done")  # the bar ends full, with or without the prior's stage
        return result

    if segmenter is None:
        from polycl.propagate.chain_engine import MAX_CACHED_SLICES
        from polycl.sam import SliceSegmenter

        segmenter = SliceSegmenter(hu, backend=opts.sam_model, device=opts.device,
                                   cache_size=min(hu.shape[0], MAX_CACHED_SLICES))
    before = segmenter.embeddings_computed
    t1 = time.perf_counter()
    located = any(src["source"] == "prior" for src in prior.sources)
    drawn = prior.draw_from_image(hu, segmenter, (sx, sy, sz), sam_report.span(0.0, 0.6) if located else None)
    coarse = prior.coarse  # objects the prior only located are drawn by SAM above; the rest go on below
    if located:
        sam_report = sam_report.span(0.6, 1.0)
    if not coarse.any():  # every object was drawn from the image
        result.mask, result.engine = o.from_canonical(drawn.astype(np.uint8)), "chain (from the atlas prior's location)"
    elif opts.mode == "refine":
        from polycl import refine

        refined = refine.run(volume, o.from_canonical(coarse), refine.RefineOptions(
            sam_model=opts.sam_model, margin=opts.margin, min_component_px=opts.min_component_px, device=opts.device,
            check_ct=False), segmenter=segmenter, progress=sam_report)
        result.mask, result.note = refined.mask, refined.stats.summary()
    else:
        out, reports, engine = run_pipeline(
            hu, coarse, (sx, sy, sz), segmenter, sam_report, opts.pipeline, engine=opts.engine, sam2=opts.sam2,
            device=opts.device, predictor=predictor, box=(opts.margin, opts.min_component_px),
            coarse_name="atlas prior" if atlas_target else "U-Net")
        result.mask, result.components, result.engine = o.from_canonical(out), reports, engine
    if drawn is not None and coarse.any():
        result.mask = np.maximum(result.mask, o.from_canonical(drawn.astype(np.uint8)))
    result.seconds["sam"] = time.perf_counter() - t1
    result.embeddings = segmenter.embeddings_computed - before
    result.encoder = segmenter.loaded.encoder.name if result.embeddings else ""
    sam_report(1, 1, "done")
    return result
