"""Public API: :func:`propagate` (a generator of slices) and :func:`propagate_volume` (a whole mask).

Everything runs in canonical (LPS) slice space (see :mod:`polycl.preprocess`): slice indices
yielded by :func:`propagate` are canonical axial indices, inferior -> superior, and masks are
canonical (y, x) slices. :func:`propagate_volume` returns the mask on the input volume's own grid.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from polycl.errors import Cancelled, InputError
from polycl.preprocess import from_canonical, to_canonical
from polycl.progress import CancelToken, Progress
from polycl.propagate.seeds import Seed, canonical_mask, canonical_slice_index, seeds_from_mask
from polycl.propagate.stop import StopRule
from polycl.validate import require_ct
from polycl.volume import Volume

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


def choose_engine(engine: str = "auto", sam2: str | os.PathLike | None = None) -> EngineChoice:
    """``sam2``/``chain`` as asked; ``auto``: SAM 2 when its weights are in the cache, else chaining."""
    from polycl.propagate.checkpoints import resolve_sam2

    engine = (engine or "auto").lower()
    if engine not in ENGINES:
        raise InputError(f"unknown engine '{engine}'; use one of {', '.join(ENGINES)}")
    if engine == "chain":
        return EngineChoice("chain", "asked for", "LiteMedSAM box refiner, chained slice to slice")
    ck = resolve_sam2(sam2)
    if engine == "sam2":
        if not ck.present:
            from polycl.propagate.checkpoints import ensure_sam2

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


class Propagation:
    """An iterable propagation run: iterate to get :class:`PropagatedSlice` items as they are made.

    Attributes set before iteration: ``engine`` (:class:`EngineChoice`), ``seeds`` (canonical
    :class:`Seed` list), ``start``/``end`` (canonical limits, inclusive), ``rule``. Stop iterating
    at any time to cancel; nothing is left behind.
    """

    def __init__(self, volume: Volume, hu: np.ndarray, seeds: list[Seed], engine_choice: EngineChoice,
                 engine_obj, start: int, end: int, rule: StopRule) -> None:
        self.volume, self.hu, self.seeds = volume, hu, seeds
        self.engine, self._engine = engine_choice, engine_obj
        self.start, self.end, self.rule = start, end, rule
        sx, sy, _ = volume.geometry.spacing
        self.pixel_area_mm2 = float(sx * sy)

    @property
    def objects(self) -> list[int]:
        """Object numbers of the seeds, in the order they are propagated."""
        return sorted({s.obj for s in self.seeds})

    @property
    def n_slices(self) -> int:
        """Upper bound on the number of slices yielded (the limits' span, once per object)."""
        return (self.end - self.start + 1) * len(self.objects)

    def __iter__(self) -> Iterator[PropagatedSlice]:
        """Each object on its own (its seeds, boxes, stop rule and confidence), one after the other."""
        for obj in self.objects:
            seeds = [s for s in self.seeds if s.obj == obj]
            for idx, mask, conf in self._engine.run(self.hu, seeds, start=self.start, end=self.end,
                                                     rule=self.rule, pixel_area_mm2=self.pixel_area_mm2):
                yield PropagatedSlice(int(idx), np.asarray(mask, dtype=bool), float(conf), obj)


def make_engine(choice: EngineChoice, *, device="auto", sam2=None, predictor=None, refiner=None, segmenter=None):
    """The engine object of ``choice``; ``segmenter`` (chain only) shares a volume's slice embeddings."""
    from polycl.device import resolve_device

    dev = resolve_device(device)
    if choice.name == "sam2":
        from polycl.propagate.sam2_engine import Sam2Engine

        if predictor is None:
            from polycl.propagate.checkpoints import build_predictor, resolve_sam2

            predictor = build_predictor(resolve_sam2(sam2), device=dev)
        return Sam2Engine(predictor, label=choice.detail)
    from polycl.propagate.chain_engine import ChainEngine

    return ChainEngine(refiner, device=dev, segmenter=segmenter)


def propagate(volume: Volume, seed: Volume | np.ndarray | Sequence[Seed], *,
              seed_slices: Sequence[int] | None = None, engine: str = "auto",
              sam2: str | os.PathLike | None = None, start: int | None = None, end: int | None = None,
              stop_after: int | None = 3, rule: StopRule | None = None, device: str = "auto",
              predictor=None, refiner=None, segmenter=None, split_objects: bool = True,
              check_ct: bool = True) -> Propagation:
    """Set up a propagation of annotated slice(s) through ``volume`` (HU, any orientation).

    ``seed``: a mask on ``volume``'s grid (its annotated slices seed the run, see
    :func:`~polycl.propagate.seeds.seeds_from_mask`), or a list of canonical :class:`Seed`\\ s
    (masks, boxes or points). ``seed_slices``: only these slices of the mask, as indices of the
    *input* array's axis 0 (Slicer's IJK k). ``start``/``end``: optional limits, also input indices,
    inclusive. ``stop_after``: K vanished slices in a row end a direction (``None``: run to the limits).
    ``engine``: "sam2", "chain" or "auto" (SAM 2 when its weights are cached). ``predictor`` /
    ``refiner``: a ready SAM 2 video predictor / LiteMedSAM refiner to reuse (else loaded here);
    ``segmenter``: a :class:`~polycl.sam.SliceSegmenter` on the canonical volume whose embeddings the
    chain engine reuses. ``split_objects``: each connected piece of the seed mask is its own object
    (two kidneys: two boxes, two stop rules); False treats the seed as one object.

    Input problems raise here, before any work. Returns a :class:`Propagation` to iterate.
    """
    if check_ct:
        require_ct(volume)
    hu = to_canonical(volume).astype(np.float32, copy=False)
    z = hu.shape[0]
    if isinstance(seed, (Volume, np.ndarray)):
        if isinstance(seed, Volume) and not volume.geometry.same_grid_as(seed.geometry, volume.shape, seed.shape):
            from polycl.validate import require_same_grid

            require_same_grid(volume, seed, "seed mask")
        canon = canonical_mask(volume, seed)
        chosen = [canonical_slice_index(volume, k) for k in seed_slices] if seed_slices is not None else None
        seeds = seeds_from_mask(canon, chosen, split_objects=split_objects)
    else:
        seeds = list(seed)
        if not seeds:
            raise InputError("no seeds given")
        for s in seeds:
            if not 0 <= s.index < z:
                raise InputError(f"seed slice {s.index} is outside the volume (0..{z - 1})")
            if s.mask is not None and s.mask.shape != hu.shape[1:]:
                raise InputError(f"seed mask on slice {s.index} is {s.mask.shape}, slices are {hu.shape[1:]}")
    lims = [canonical_slice_index(volume, k) for k in (start, end) if k is not None]
    lo = 0 if start is None else canonical_slice_index(volume, start)
    hi = z - 1 if end is None else canonical_slice_index(volume, end)
    if start is not None and end is not None:
        lo, hi = min(lims), max(lims)
    elif start is not None or end is not None:
        # one limit given in input order: it bounds the side it is on
        k = lims[0]
        s_idx = [s.index for s in seeds]
        if k <= min(s_idx):
            lo, hi = k, z - 1
        else:
            lo, hi = 0, k
    outside = [s.index for s in seeds if not lo <= s.index <= hi]
    if outside:
        raise InputError(f"seed slice(s) {outside} lie outside the limits {lo}..{hi} (canonical order)")
    if predictor is not None and engine in ("auto", "sam2"):
        choice = EngineChoice("sam2", "a ready SAM 2 predictor was given", getattr(predictor, "polycl_label", ""))
    else:
        choice = choose_engine(engine, sam2)
    the_rule = rule or default_rule(choice.name, stop_after)
    if rule is not None and stop_after != rule.stop_after:
        the_rule = StopRule(**{**rule.to_dict(), "stop_after": stop_after})
    eng = make_engine(choice, device=device, sam2=sam2, predictor=predictor, refiner=refiner, segmenter=segmenter)
    return Propagation(volume, hu, seeds, choice, eng, lo, hi, the_rule)


@dataclass
class PropagationResult:
    """A finished (or, when asked, partial) propagation on the input grid."""

    mask: np.ndarray  # uint8 (z, y, x) on the input volume's grid
    engine: EngineChoice
    confidence: dict[int, float]  # canonical slice index -> confidence, for every visited slice
    seeds: list[int]  # canonical seed slice indices
    visited: list[int]  # canonical indices in visiting order
    complete: bool = True
    seconds: float = 0.0
    nonempty: list[int] = field(default_factory=list)  # canonical indices with a non-empty mask
    extra: dict = field(default_factory=dict)
    objects: list[dict] = field(default_factory=list)  # per object: seeds, non-empty range, mean confidence

    def describe_objects(self) -> str:
        """One line a user reads: how many objects were seeded and where each one went."""
        parts = [f"object {o['obj'] + 1}: seed slice(s) {o['seeds']} -> "
                 + (f"slices {o['first']}..{o['last']} ({o['slices']} non-empty, mean confidence "
                    f"{o['mean_confidence']:.2f})" if o["slices"] else "nothing found") for o in self.objects]
        n = len(self.objects)
        head = (f"{n} object{'s' if n != 1 else ''} on the seed slice(s)"
                + (": only it was propagated (annotate any other object on the seed slice too)" if n == 1 else ""))
        return head + "; " + "; ".join(parts)

    def low_confidence(self, threshold: float = 0.5) -> list[int]:
        """Visited non-seed slices whose mask is non-empty but confidence is under ``threshold``."""
        keep = set(self.nonempty)
        return sorted(k for k, c in self.confidence.items() if c < threshold and k in keep and k not in self.seeds)


def propagate_volume(volume: Volume, seed, *, progress: Progress | None = None, cancel: CancelToken | None = None,
                     keep_partial: bool = False, **kwargs) -> PropagationResult:
    """Run :func:`propagate` to the end and return the whole mask on ``volume``'s grid.

    ``progress(done, total, message)`` after each slice (``total`` is an upper bound; see
    :mod:`polycl.progress`); a cancelled ``cancel`` token stops the run:
    :class:`~polycl.errors.Cancelled` is raised and nothing partial is returned, unless
    ``keep_partial`` (then ``complete`` is False).
    """
    t0 = time.perf_counter()
    run = propagate(volume, seed, **kwargs)
    canon = np.zeros(run.hu.shape, np.uint8)
    per_obj: dict[int, dict[int, tuple[bool, float]]] = {o: {} for o in run.objects}
    visited: dict[int, None] = {}  # canonical indices in visiting order (each once, whatever the objects)
    complete = True
    done = 0
    for item in run:
        canon[item.index] |= item.mask
        per_obj[item.obj][item.index] = (bool(item.mask.any()), item.confidence)
        visited.setdefault(item.index)
        done += 1
        if progress is not None:
            progress(done, run.n_slices, f"propagating, slice {item.index} (axial order)")
        if cancel is not None and cancel.cancelled:
            complete = False
            break
    if not complete and not keep_partial:
        raise Cancelled(f"propagation cancelled after {len(visited)} slice(s); nothing was kept")
    mask = from_canonical(canon, volume)
    nonempty = [int(k) for k in np.flatnonzero(canon.reshape(canon.shape[0], -1).any(axis=1))]
    found: dict[int, list[float]] = {}
    seen: dict[int, float] = {}
    for slices in per_obj.values():
        for k, (has, c) in slices.items():
            seen[k] = max(seen.get(k, 0.0), c)
            if has:
                found.setdefault(k, []).append(c)
    # per slice: the lowest confidence of the objects found on it (else the best of the empty ones)
    conf = {k: min(found[k]) if k in found else seen[k] for k in visited}
    objects = []
    for obj, slices in per_obj.items():
        found = sorted(k for k, (has, _) in slices.items() if has)
        objects.append({"obj": obj, "seeds": sorted({s.index for s in run.seeds if s.obj == obj}),
                        "first": found[0] if found else None, "last": found[-1] if found else None,
                        "slices": len(found),
                        "mean_confidence": float(np.mean([slices[k][1] for k in found])) if found else 0.0})
    return PropagationResult(np.ascontiguousarray(mask, dtype=np.uint8), run.engine, conf,
                             sorted({s.index for s in run.seeds}), list(visited), complete, time.perf_counter() - t0,
                             nonempty, {"start": run.start, "end": run.end, "rule": run.rule.to_dict()}, objects)
