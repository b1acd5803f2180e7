"""Propagate: carry annotated slice(s) through a CT volume; one entry point, :func:`run` (``polycl
propagate``, the Slicer module's Propagate), configured by :class:`PropagateOptions`, returning a
:class:`PropagationResult`.

The seed is a mask on the volume's grid (its annotated slices, or only ``seed_slices``; a whole
coarse mask: the middle slice of each 3D component) or a list of canonical
:class:`~polycl.propagate.seeds.Seed`\\ s (masks, boxes or points). Each connected object of the seed
is propagated on its own (two kidneys: two boxes, two stop rules) by SAM 2's video predictor (when
its weights are cached) or LiteMedSAM chained slice to slice, until the stop rule ends each
direction (docs/propagation.md).

The volume is put in canonical (LPS) order once per call (or not at all when a
:class:`~polycl.sam.SliceSegmenter` on its canonical array is given); the returned mask is on the
input volume's grid, and slice indices in the result are canonical axial indices. Progress and
cancel follow :mod:`polycl.progress`: ``progress(done, total, message)`` after each slice (``total``
is an upper bound); a cancelled run raises :class:`~polycl.errors.Cancelled` and returns nothing. A
GPU that runs out of memory is retried with SAM 2's inference state kept on the CPU
(:func:`polycl.device.retry_on_oom`). The streaming machinery underneath is internal
(:mod:`polycl.propagate.stream`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from polycl.errors import InputError
from polycl.progress import CancelToken, Progress, Reporter
from polycl.propagate.stream import ENGINES, EngineChoice, Propagation, prepare
from polycl.volume import Volume


@dataclass
class PropagateOptions:
    """How :func:`run` carries annotated slices through a volume; checked when made (and again by :func:`run`).

    ``engine``: auto (SAM 2 when its weights are cached, else chain), sam2 or chain; ``sam2``: SAM 2.1
    checkpoint name or path; ``stop_after``: K vanished slices in a row end a direction (None: run to
    the limits); ``start``/``end``: inclusive limits as input slice indices (axis 0, Slicer's IJK k);
    ``keep_seed``: the slices named by ``seed_slices`` stay exactly as drawn in the result;
    ``split_objects``: each connected piece of the seed is its own object (False: the seed slice is
    one object); ``device``: auto, cpu or cuda; ``check_ct``: refuse volumes that do not look like CT."""

    engine: str = "auto"
    sam2: str | None = None
    stop_after: int | None = 3
    start: int | None = None
    end: int | None = None
    keep_seed: bool = True
    split_objects: bool = True
    device: str = "auto"
    check_ct: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.engine not in ENGINES:
            raise InputError(f"unknown engine '{self.engine}'; use one of {', '.join(ENGINES)}")
        if self.stop_after is not None and self.stop_after < 1:
            raise InputError(f"stop_after must be >= 1 (or None to run to the limits), got {self.stop_after}")


@dataclass
class PropagationResult:
    """A finished propagation: ``mask`` on the input grid; slice indices are canonical axial indices."""

    mask: np.ndarray  # uint8 (z, y, x) on the input volume's grid
    engine: EngineChoice
    confidence: dict[int, float]  # canonical slice index -> confidence, for every visited slice
    seeds: list[int]  # canonical seed slice indices
    visited: list[int]  # canonical indices in visiting order
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


def run(volume: Volume, seed, options: PropagateOptions | None = None, *, seed_slices: Sequence[int] | None = None,
        progress: Progress | None = None, cancel: CancelToken | None = None, segmenter=None,
        predictor=None) -> PropagationResult:
    """Carry the annotated slice(s) of ``seed`` through ``volume`` (CT in HU, any orientation).

    Args:
        volume: the CT as a :class:`Volume`.
        seed: a mask (array or Volume) on the volume's grid, or a list of canonical
            :class:`~polycl.propagate.seeds.Seed`\\ s.
        options: :class:`PropagateOptions` (defaults: engine auto, stop after 3 vanished slices).
        seed_slices: seed only from these slices of the mask (input indices, Slicer's IJK k).
        progress, cancel: :mod:`polycl.progress`.
        segmenter: a :class:`~polycl.sam.SliceSegmenter` on the volume's canonical array (the
            chain engine reuses its model and embeddings; its array is the canonical volume).
        predictor: a loaded SAM 2 video predictor (engine auto or sam2 then use it).

    Returns:
        :class:`PropagationResult` with the mask on the volume's grid.

    Raises:
        InputError (empty seed, seed slice not annotated or outside the limits, bad options),
        GeometryError (seed not on the image's grid), NotCTError, Cancelled.
    """
    from polycl.device import retry_on_oom
    from polycl.orientation import orientation

    t0 = time.perf_counter()
    opts = options or PropagateOptions()
    opts.validate()
    report = Reporter(progress, cancel, cancelled_message="propagation cancelled; nothing was changed")
    stream = prepare(volume, seed, opts, seed_slices=seed_slices, predictor=predictor, segmenter=segmenter,
                     hu=segmenter.array if segmenter is not None else None)

    levels = 2 if stream.can_offload else 1  # 2: as asked; 1: SAM 2's state on the CPU (after an OOM)

    def attempt(level: int):
        if level < levels:
            stream.offload()
        return _collect(stream, report)

    canon, per_obj, visited = retry_on_oom(attempt, levels, shrink=2)
    mask = orientation(volume).from_canonical(canon)
    if opts.keep_seed and seed_slices is not None and isinstance(seed, (Volume, np.ndarray)):
        drawn = np.asarray(seed.array if isinstance(seed, Volume) else seed)
        for k in seed_slices:
            mask[int(k)] = drawn[int(k)] > 0
    result = _result(stream, np.ascontiguousarray(mask, dtype=np.uint8), canon, per_obj, visited)
    result.seconds = time.perf_counter() - t0
    return result


def _collect(stream: Propagation, report: Reporter):
    """Run ``stream`` to the end: (canonical uint8 mask, {obj: {slice: (non-empty, confidence)}},
    canonical slices in visiting order)."""
    canon = np.zeros(stream.hu.shape, np.uint8)
    per_obj: dict[int, dict[int, tuple[bool, float]]] = {o: {} for o in stream.objects}
    visited: dict[int, None] = {}  # each slice once, whatever the objects
    for done, item in enumerate(stream, 1):
        canon[item.index] |= item.mask
        per_obj[item.obj][item.index] = (bool(item.mask.any()), item.confidence)
        visited.setdefault(item.index)
        report(done, stream.n_slices, f"propagating, slice {item.index} (axial order)")
    report.check()
    return canon, per_obj, list(visited)


def _result(stream: Propagation, mask: np.ndarray, canon: np.ndarray, per_obj: dict, visited: list[int]):
    """The :class:`PropagationResult` of a finished ``stream``: per-slice and per-object confidences."""
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
        hits = sorted(k for k, (has, _) in slices.items() if has)
        objects.append({"obj": obj, "seeds": sorted({s.index for s in stream.seeds if s.obj == obj}),
                        "first": hits[0] if hits else None, "last": hits[-1] if hits else None,
                        "slices": len(hits),
                        "mean_confidence": float(np.mean([slices[k][1] for k in hits])) if hits else 0.0})
    return PropagationResult(mask, stream.engine, conf, sorted({s.index for s in stream.seeds}), visited,
                             nonempty=nonempty, objects=objects,
                             extra={"start": stream.start, "end": stream.end, "rule": stream.rule.to_dict()})
