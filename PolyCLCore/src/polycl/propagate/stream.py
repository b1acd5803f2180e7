"""The streaming run under :func:`polycl.propagate.run`, the interactive fill and Segment's pipeline.

Its public parts are exported by :mod:`polycl.propagate` (:func:`prepare`, :func:`make_engine`,
:func:`default_rule`, :func:`choose_engine`); import them from there. :func:`prepare` checks the inputs, picks the
engine (:func:`choose_engine`) and returns a :class:`Propagation`: iterating it yields one
:class:`PropagatedSlice` per slice and object as the engine makes it (the engines are generators,
as sam2's ``propagate_in_video`` is), which gives progress and cancel points between slices.
:func:`polycl.propagate.run` collects it into a whole mask; the interactive session
(:mod:`polycl.interact.fill`) writes it into its own canonical work array.

Everything here is in canonical (LPS) slice space (:mod:`polycl.orientation`): slice indices are
canonical axial indices, inferior -> superior, and masks are canonical (y, x) slices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, NamedTuple, Sequence

import numpy as np

from polycl.errors import InputError
from polycl.propagate.seeds import Seed, seeds_from_mask
from polycl.propagate.stop import StopRule
from polycl.volume import Volume

if TYPE_CHECKING:
    from polycl.propagate.api import PropagateOptions

ENGINES = ("auto", "sam2", "chain")


class PropagatedSlice(NamedTuple):
    """One propagated slice of one object: canonical axial index, bool mask (y, x), confidence 0..1,
    object number (:attr:`Seed.obj`)."""

    index: int
    mask: np.ndarray
    confidence: float
    obj: int = 0


@dataclass
class EngineChoice:
    name: str  # "sam2" or "chain"
    reason: str
    detail: str = ""  # checkpoint name / refiner


def choose_engine(engine: str = "auto", sam2: str | os.PathLike | None = None, predictor=None) -> EngineChoice:
    """``sam2``/``chain`` as asked; ``auto``: SAM 2 when its weights are in the cache (or a ready SAM 2
    ``predictor`` is given), else chaining."""
    from polycl.propagate.sam2_weights import resolve_sam2

    engine = (engine or "auto").lower()
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'; use one of {', '.join(ENGINES)}")
    if predictor is not None and engine != "chain":
        return EngineChoice("sam2", "a ready SAM 2 predictor was given", getattr(predictor, "polycl_label", ""))
    if engine == "chain":
        return EngineChoice("chain", "asked for", "LiteMedSAM box refiner, chained slice to slice")
    ck = resolve_sam2(sam2)
    if engine == "sam2":
        if not ck.present:
            from polycl.propagate.sam2_weights import ensure_sam2

            ensure_sam2(sam2 if sam2 is not None else ck.name, download=False)  # raises a clear message
        return EngineChoice("sam2", "asked for", ck.name)
    if ck.present:
        return EngineChoice("sam2", f"SAM 2 weights found ({ck.path})", ck.name)
    return EngineChoice("chain", f"no SAM 2 weights in {ck.path.parent}; using the offline engine",
                        "LiteMedSAM box refiner, chained slice to slice")


def default_rule(engine: str, stop_after: int | None = 3) -> StopRule:
    """Stop rules measured on the shared CT (see docs/propagation.md)."""
    if engine == "chain":
        from polycl.propagate.chain_engine import CHAIN_RULE

        return StopRule(**{**CHAIN_RULE.to_dict(), "stop_after": stop_after})
    return StopRule(stop_after=stop_after, min_area_mm2=10.0)


def make_engine(choice: EngineChoice, *, device="auto", sam2=None, predictor=None, segmenter=None,
                margin_px: float | None = None):
    """The engine object of ``choice``; ``segmenter`` (chain only) shares a volume's slice embeddings;
    ``margin_px`` (chain only): its box margin in pixels instead of :data:`~polycl.propagate.chain_engine.MARGIN_MM`."""
    from polycl.device import resolve_device

    dev = resolve_device(device)
    if choice.name == "sam2":
        from polycl.propagate.sam2_engine import Sam2Engine

        if predictor is None:
            from polycl.propagate.sam2_weights import build_predictor, resolve_sam2

            predictor = build_predictor(resolve_sam2(sam2), device=dev)
        return Sam2Engine(predictor, label=choice.detail)
    from polycl.propagate.chain_engine import ChainEngine

    return ChainEngine(segmenter.loaded if segmenter is not None else None, device=dev, segmenter=segmenter,
                       margin_px=margin_px)


class Propagation:
    """An iterable propagation run: iterate to get :class:`PropagatedSlice` items as they are made.

    Attributes set before iteration: ``engine`` (:class:`EngineChoice`), ``runner`` (the engine
    object), ``hu`` (canonical HU array), ``seeds`` (canonical :class:`Seed` list),
    ``start``/``end`` (canonical limits, inclusive), ``rule``. Stop iterating at any time to
    cancel; nothing is left behind. Iterating again runs again from the seeds.
    """

    def __init__(self, hu: np.ndarray, spacing_xyz, seeds: list[Seed], engine: EngineChoice, runner,
                 start: int, end: int, rule: StopRule) -> None:
        self.hu, self.seeds = hu, seeds
        self.engine, self.runner = engine, runner
        self.start, self.end, self.rule = start, end, rule
        sx, sy, sz = spacing_xyz
        self.pixel_area_mm2 = float(sx * sy)
        self.slice_mm = float(sz)

    @property
    def objects(self) -> list[int]:
        """Object numbers of the seeds, in the order they are propagated."""
        return sorted({s.obj for s in self.seeds})

    @property
    def n_slices(self) -> int:
        """Upper bound on the number of slices yielded (the limits' span, once per object)."""
        return (self.end - self.start + 1) * len(self.objects)

    @property
    def can_offload(self) -> bool:
        """True when :meth:`offload` can lower the GPU memory of a rerun (SAM 2 on CUDA)."""
        return (self.engine.name == "sam2" and self.runner.device.type == "cuda"
                and not self.runner.offload_state_to_cpu)

    def offload(self) -> None:
        """Keep SAM 2's inference state on the CPU (sam2's ``offload_state_to_cpu``) from the next run on."""
        self.runner.offload_state_to_cpu = True

    def __iter__(self) -> Iterator[PropagatedSlice]:
        """Each object on its own (its seeds, boxes, stop rule and confidence), one after the other."""
        for obj in self.objects:
            seeds = [s for s in self.seeds if s.obj == obj]
            for idx, mask, conf in self.runner.run(self.hu, seeds, start=self.start, end=self.end,
                                                   rule=self.rule, pixel_area_mm2=self.pixel_area_mm2,
                                                   slice_mm=self.slice_mm):
                yield PropagatedSlice(int(idx), np.asarray(mask, dtype=bool), float(conf), obj)


def prepare(volume: Volume, seed: Volume | np.ndarray | Sequence[Seed], options: PropagateOptions, *,
            seed_slices: Sequence[int] | None = None, hu: np.ndarray | None = None, rule: StopRule | None = None,
            predictor=None, segmenter=None) -> Propagation:
    """Check the inputs and set up a :class:`Propagation` of ``seed`` through ``volume`` (HU, any
    orientation), as :func:`polycl.propagate.run` describes (``seed``, ``seed_slices``, ``options``,
    ``predictor``, ``segmenter``). ``hu``: the volume's canonical array when the caller has it
    (the volume is then not reoriented again); ``rule``: a stop rule instead of the engine's default.
    Input problems raise here, before any model is loaded."""
    from polycl.orientation import orientation
    from polycl.validate import require_ct, require_same_grid

    if options.check_ct:
        require_ct(volume)
    o = orientation(volume)
    if hu is None:
        hu = o.to_canonical(volume.array)  # the one reorientation of the volume
    if hu.shape != o.canonical_shape:
        raise InputError("the canonical array (or segmenter) was made for another volume or orientation")
    hu = hu.astype(np.float32, copy=False)
    z = hu.shape[0]
    if isinstance(seed, (Volume, np.ndarray)):
        if isinstance(seed, Volume):
            require_same_grid(volume, seed, "seed mask")
        arr = np.asarray(seed.array if isinstance(seed, Volume) else seed)
        if arr.shape != volume.shape:
            raise InputError(f"seed mask shape {arr.shape} differs from the image's {volume.shape}")
        canon = o.to_canonical((arr > 0).astype(np.uint8)) > 0
        chosen = [o.canonical_slice(k) for k in seed_slices] if seed_slices is not None else None
        seeds = seeds_from_mask(canon, chosen, split_objects=options.split_objects)
    else:
        seeds = list(seed)
        if not seeds:
            raise InputError("no seeds given")
        for s in seeds:
            if not 0 <= s.index < z:
                raise InputError(f"seed slice {s.index} is outside the volume (0..{z - 1})")
            if s.mask is not None and s.mask.shape != hu.shape[1:]:
                raise InputError(f"seed mask on slice {s.index} is {s.mask.shape}, slices are {hu.shape[1:]}")
    lo, hi = _limits(o, options.start, options.end, [s.index for s in seeds], z)
    outside = [s.index for s in seeds if not lo <= s.index <= hi]
    if outside:
        raise InputError(f"seed slice(s) {outside} lie outside the limits {lo}..{hi} (canonical order)")
    choice = choose_engine(options.engine, options.sam2, predictor)
    runner = make_engine(choice, device=options.device, sam2=options.sam2, predictor=predictor, segmenter=segmenter)
    return Propagation(hu, o.spacing_xyz, seeds, choice, runner, lo, hi,
                       rule or default_rule(choice.name, options.stop_after))


def _limits(o, start: int | None, end: int | None, seed_slices: list[int], z: int) -> tuple[int, int]:
    """Canonical (lo, hi) of the input limits ``start``/``end`` (inclusive; None: the volume's end).
    One limit alone bounds the side of the seeds it is on."""
    if start is not None and end is not None:
        return tuple(sorted((o.canonical_slice(start), o.canonical_slice(end))))
    if start is None and end is None:
        return 0, z - 1
    k = o.canonical_slice(start if start is not None else end)
    return (k, z - 1) if k <= min(seed_slices) else (0, k)
