"""An interactive segmentation session: clicks, boxes and painted corrections on one CT.

Coordinates
    Every position a caller passes or gets back is a voxel index ``(z, y, x)`` of ``volume.array``
    (the input grid: z = array axis 0, Slicer's IJK k; y = axis 1, row; x = axis 2, column);
    floats are allowed and rounded to the nearest voxel. Masks are uint8 0/1 arrays on the input
    grid: ``(z, y, x)`` for the volume, ``(y, x)`` for one input slice. Internally the session
    works on the canonical (LPS) reorientation of the volume (:func:`polycl.preprocess.to_canonical`),
    whose axis-0 slices are the axial slices SAM segments; a prompt belongs to the canonical axial
    slice through its position. For the usual scans (axial acquisitions, any flips) input slice z
    *is* one axial slice, and ``SliceAnswer.slice`` is that input z.

Behaviour
    * :meth:`add_point` / :meth:`add_box` answer their slice at once (all prompts of the slice
      together, on top of the slice's mask before its first prompt: see
      :mod:`polycl.interact.slice_answer`); the slice becomes a *fixed* slice.
    * :meth:`correct_slice` takes a user's painted mask for a slice as it is: a fixed slice too.
    * :meth:`propagate` fills the volume from the fixed slices (first call: the propagation engine,
      per connected object, multi-seed) or, once filled, re-propagates locally from the slices
      corrected since (:func:`polycl.propagate.local.repropagate_locally`): outwards only until
      the result agrees with the old one. Fixed slices are never overwritten.
    * :meth:`undo` steps back one action (prompt, move, removal, correction or propagation).

Bad input (a position outside the volume, a box across slices, an empty or misshapen mask, an
unknown prompt id) raises :class:`~polycl.errors.InputError` and changes nothing.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from polycl.errors import InputError
from polycl.interact.grid import IndexMap
from polycl.interact.slice_answer import SliceContext, answer_box, answer_include, remove_around
from polycl.orientation import orientation
from polycl.preprocess import canonical_spacing, from_canonical, to_canonical
from polycl.progress import CancelToken, Progress, Reporter
from polycl.volume import Volume


@dataclass(frozen=True)
class Prompt:
    """A prompt as the user placed it. ``kind``: 'include', 'exclude' or 'box'; ``position``: the
    input (z, y, x) of a point, or the first corner of a box; ``corner``: the opposite corner of a
    box (same slice), else None; ``slice``: the input z of the slice it is on."""

    id: int
    kind: str
    position: tuple[float, float, float]
    corner: tuple[float, float, float] | None
    slice: int
    canonical_slice: int

    @property
    def positions(self) -> tuple:
        return (self.position,) if self.corner is None else (self.position, self.corner)


@dataclass
class SliceAnswer:
    """What one prompt changed. ``mask2d``: (y, x) uint8 of input slice ``slice``; ``quality``: SAM's
    predicted IoU of the answer (1.0 when no SAM call was needed); ``seconds``: wall time of the
    answer (decoder and region growing; includes embedding the slice if it was not cached);
    ``changed``: input z indices whose mask changed; ``prompt_id``: the prompt added or moved."""

    mask2d: np.ndarray
    slice: int
    quality: float
    seconds: float
    changed: list[int]
    prompt_id: int | None = None
    _session: "InteractiveSession | None" = field(default=None, repr=False)

    @property
    def mask(self) -> np.ndarray:
        """The whole current result, (z, y, x) uint8 on the input grid."""
        return self._session.mask


@dataclass
class VolumeAnswer:
    """A propagation's result. ``mask``: (z, y, x) uint8 on the input grid; ``changed``: (first,
    last) input z of the changed slices, or None; ``confidence``: input z -> 0..1 for every slice
    the engine wrote; ``engine``: 'chain' or 'sam2' (``mode``: 'fill' or 'local')."""

    mask: np.ndarray
    changed: tuple[int, int] | None
    confidence: dict[int, float]
    engine: str
    seconds: float
    mode: str = "fill"
    changed_slices: list[int] = field(default_factory=list)


class InteractiveSession:
    """Interactive segmentation of one segment on ``volume`` (CT in HU). See the module docstring.

    Args:
        volume: the CT, any orientation.
        mask: the segment's current mask, (z, y, x) uint8 on ``volume``'s grid, or None (empty).
            A non-empty mask counts as a filled volume: later corrections re-propagate locally.
        backend, device: SAM backend ('litemedsam' bundled) and device, when no ``segmenter`` is given.
        engine: propagation engine, 'auto' (SAM 2 when its weights are cached, else chain), 'sam2', 'chain'.
        segmenter: a :class:`~polycl.sam.SliceSegmenter` made on this volume with ``canonical=True``,
            to share its slice embeddings (e.g. from :class:`~polycl.sam.SegmenterCache`).
    """

    def __init__(self, volume: Volume, mask: np.ndarray | None = None, *, backend: str = "litemedsam",
                 device: str = "auto", engine: str = "auto", segmenter=None, check_ct: bool = True) -> None:
        from polycl.propagate import choose_engine

        if not isinstance(volume, Volume):
            raise InputError("InteractiveSession needs a polycl.volume.Volume (CT in HU)")
        if check_ct:
            from polycl.validate import require_ct

            require_ct(volume)
        self.volume = volume
        self.grid = IndexMap(volume)
        shape = orientation(volume).canonical_shape
        if segmenter is not None and segmenter.array.shape != shape:
            raise InputError(f"segmenter array {segmenter.array.shape} is not this volume's canonical {shape}")
        # the volume in canonical order once: the segmenter's array when one is given
        self.hu = (segmenter.array if segmenter is not None else to_canonical(volume)).astype(np.float32, copy=False)
        sx, sy, _ = canonical_spacing(volume)
        self.pixel_mm = (float(sy), float(sx))
        self.engine_choice = choose_engine(engine)
        if segmenter is None:
            from polycl.sam import SliceSegmenter

            segmenter = SliceSegmenter(self.hu, backend=backend, device=device, cache_size=min(self.hu.shape[0], 256))
        self.segmenter = segmenter
        self._canon = np.zeros(self.hu.shape, np.uint8)
        if mask is not None:
            self._canon[:] = self.mask_to_canonical(mask)
        self._filled = bool(self._canon.any())
        self._prompts: dict[int, Prompt] = {}
        self._base: dict[int, np.ndarray] = {}   # canonical k -> slice mask before its first prompt
        self._fixed: dict[int, np.ndarray] = {}  # canonical k -> the corrected slice (never overwritten)
        self._painted: set[int] = set()          # canonical k given by correct_slice (fixed even without prompts)
        self._pending: set[int] = set()          # corrected since the last propagate()
        self._undo: list[dict] = []
        self._ids = itertools.count(1)
        self._chain = None
        self._limits: np.ndarray | None = None   # canonical slices a propagation may write (None: all)
        self.last_propagation: VolumeAnswer | None = None

    # -- state -----------------------------------------------------------------------------------
    @property
    def mask(self) -> np.ndarray:
        """The current result: (z, y, x) uint8 0/1 on the input grid."""
        return np.ascontiguousarray(from_canonical(self._canon, self.volume), dtype=np.uint8)

    @property
    def canonical_mask(self) -> np.ndarray:
        """The current result in canonical order (read-only view, (z, y, x) uint8)."""
        v = self._canon.view()
        v.flags.writeable = False
        return v

    @property
    def prompts(self) -> list[Prompt]:
        return list(self._prompts.values())

    @property
    def fixed_slices(self) -> list[int]:
        """Input z of the fixed (corrected) slices, sorted."""
        return sorted(self._input_z(k) for k in self._fixed)

    @property
    def filled(self) -> bool:
        return self._filled

    @property
    def fixed_masks(self) -> dict[int, np.ndarray]:
        """The slices the user fixed (prompts answered, slices painted): canonical k -> (y, x) bool mask.
        A new dict each time; the masks themselves are the session's, not to be changed."""
        return dict(self._fixed)

    @property
    def chain_engine(self):
        """The chain engine the fill made (:class:`polycl.propagate.chain_engine.ChainEngine`, its slice
        embeddings and HU range kept for corrections), or None before a chain fill."""
        return self._chain

    @chain_engine.setter
    def chain_engine(self, engine) -> None:
        self._chain = engine

    def _input_z(self, k: int) -> int:
        return int(round(self.grid.to_input((k, 0, 0))[0])) if abs(self.grid.matrix[0, 0]) == 1 else int(k)

    def mask_to_canonical(self, mask) -> np.ndarray:
        """A (z, y, x) mask on the input grid as uint8 0/1 in the session's canonical (LPS) order,
        the order of :attr:`segmenter`'s slices; a mask of another shape raises InputError."""
        arr = np.asarray(mask)
        if arr.shape != self.volume.shape:
            raise InputError(f"mask shape {arr.shape} differs from the volume's {self.volume.shape}")
        return (to_canonical(self.volume.with_array((arr > 0).astype(np.uint8))) > 0).astype(np.uint8)

    def _snapshot(self, slices) -> None:
        self._undo.append({"slices": {int(k): self._canon[k].copy() for k in slices},
                           "prompts": dict(self._prompts), "base": dict(self._base), "fixed": dict(self._fixed),
                           "painted": set(self._painted), "pending": set(self._pending), "filled": self._filled})

    def undo(self) -> np.ndarray:
        """Step back one action; returns the mask ((z, y, x) uint8, input grid). Nothing to undo: unchanged."""
        if self._undo:
            st = self._undo.pop()
            for k, m in st["slices"].items():
                self._canon[k] = m
            self._prompts, self._base, self._fixed = st["prompts"], st["base"], st["fixed"]
            self._painted = st["painted"]
            self._pending, self._filled = st["pending"], st["filled"]
        return self.mask

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    # -- prompts ---------------------------------------------------------------------------------
    def _point(self, zyx) -> tuple[tuple[float, float, float], tuple[int, int, int]]:
        p = tuple(float(v) for v in self.grid.check(zyx))
        return p, self.grid.to_canonical_voxel(p)

    def add_point(self, zyx, include: bool = True) -> SliceAnswer:
        """An include (``include=True``) or exclude click at input voxel ``zyx`` = (z, y, x)."""
        p, c = self._point(zyx)
        pr = Prompt(next(self._ids), "include" if include else "exclude", p, None, int(round(p[0])), c[0])
        return self._add(pr)

    def add_box(self, corner_a, corner_b) -> SliceAnswer:
        """A box between two corners (z, y, x) on one axial slice (inclusive voxel indices)."""
        a, ca = self._point(corner_a)
        b, cb = self._point(corner_b)
        if ca[0] != cb[0]:
            raise InputError(f"a box lies on one axial slice; corners {a} and {b} are on different slices")
        if ca[1] == cb[1] or ca[2] == cb[2]:
            raise InputError(f"box {a}..{b} is empty (zero width or height)")
        return self._add(Prompt(next(self._ids), "box", a, b, int(round(a[0])), ca[0]))

    def move_prompt(self, prompt_id: int, zyx, corner=None) -> SliceAnswer:
        """Move a prompt (a box: ``zyx`` and ``corner`` are its new corners) and re-answer its slice(s)."""
        old = self._get(prompt_id)
        p, c = self._point(zyx)
        new_corner = None
        if old.kind == "box":
            q, cq = self._point(corner if corner is not None else old.corner)
            if cq[0] != c[0]:
                raise InputError("a box lies on one axial slice; the moved corners are on different slices")
            new_corner = q
        new = Prompt(old.id, old.kind, p, new_corner, int(round(p[0])), c[0])
        slices = {old.canonical_slice, new.canonical_slice}
        self._snapshot(slices)
        self._prompts[old.id] = new
        return self._answer(slices, new.canonical_slice, prompt_id, time.perf_counter())

    def remove_prompt(self, prompt_id: int) -> SliceAnswer:
        """Delete a prompt and re-answer its slice."""
        old = self._get(prompt_id)
        self._snapshot([old.canonical_slice])
        del self._prompts[prompt_id]
        return self._answer({old.canonical_slice}, old.canonical_slice, None, time.perf_counter())

    def clear_prompts(self) -> None:
        """Forget all prompts (the mask and the fixed slices stay as they are)."""
        self._snapshot([])
        self._prompts.clear()
        self._base.clear()

    def correct_slice(self, z: int, mask2d: np.ndarray) -> SliceAnswer:
        """A user's own (painted/erased) mask for input slice ``z``: (y, x) of ``volume.array[z]``.
        It becomes a fixed slice exactly as given; the prompts on that slice are dropped."""
        t0 = time.perf_counter()
        if abs(self.grid.matrix[0, 0]) != 1:
            raise InputError("correct_slice needs a volume whose array axis 0 is axial")
        zi = int(z)
        if not 0 <= zi < self.volume.shape[0]:
            raise InputError(f"slice {z} is outside the volume (0..{self.volume.shape[0] - 1})")
        m = np.asarray(mask2d)
        if m.shape != self.volume.shape[1:]:
            raise InputError(f"slice mask shape {m.shape} differs from the slices' {self.volume.shape[1:]}")
        full = np.zeros(self.volume.shape, np.uint8)
        full[zi] = m > 0
        k = self.grid.to_canonical_voxel((zi, 0, 0))[0]
        new = self.mask_to_canonical(full)[k] > 0
        self._snapshot([k])
        for pid in [p.id for p in self._prompts.values() if p.canonical_slice == k]:
            del self._prompts[pid]
        self._base[k] = new.copy()
        self._painted.add(k)
        changed = not np.array_equal(self._canon[k] > 0, new)
        self._set_fixed(k, new)
        return SliceAnswer(self._input_slice(k), zi, 1.0, time.perf_counter() - t0,
                           [zi] if changed else [], None, self)

    def _get(self, prompt_id: int) -> Prompt:
        if prompt_id not in self._prompts:
            raise InputError(f"no prompt with id {prompt_id}")
        return self._prompts[prompt_id]

    def _add(self, pr: Prompt) -> SliceAnswer:
        t0 = time.perf_counter()
        self._snapshot([pr.canonical_slice])
        self._prompts[pr.id] = pr
        try:
            return self._answer({pr.canonical_slice}, pr.canonical_slice, pr.id, t0, only=pr)
        except Exception:
            self.undo()
            raise

    def _set_fixed(self, k: int, m: np.ndarray) -> None:
        self._canon[k] = m
        self._fixed[k] = m.copy()
        self._pending.add(k)

    def _answer(self, slices, main: int, prompt_id, t0: float, only: Prompt | None = None) -> SliceAnswer:
        changed, quality = [], 1.0
        for k in sorted(slices):
            before = self._canon[k] > 0
            new, q = self._answer_slice(k, only)
            if k == main:
                quality = q
            if not np.array_equal(before, new):
                changed.append(self._input_z(k))
        return SliceAnswer(self._input_slice(main), self._input_z(main), quality, time.perf_counter() - t0,
                           sorted(changed), prompt_id, self)

    def _input_slice(self, k: int) -> np.ndarray:
        if abs(self.grid.matrix[0, 0]) == 1:
            return np.ascontiguousarray(self.mask[self._input_z(k)])
        return np.ascontiguousarray(self.mask[int(k)])

    def _answer_slice(self, k: int, only: Prompt | None = None) -> tuple[np.ndarray, float]:
        """Answer canonical slice ``k``: a new prompt (``only``) on top of the slice's current mask
        (one SAM call), else (a prompt moved or removed) all its prompts again from the slice's
        base mask, includes first, then excludes, each in the order placed."""
        mine = [p for p in self._prompts.values() if p.canonical_slice == k]
        if k not in self._base:
            self._base[k] = self._canon[k] > 0
        current = self._base[k].copy()
        includes = [self.grid.to_canonical_voxel(p.position)[1:] for p in mine if p.kind == "include"]
        if only is not None and len(mine) > 1:
            current, mine = self._canon[k] > 0, [only]
        quality = 1.0
        if mine:
            ctx = SliceContext.of(self.hu[k], self.pixel_mm)
            for p in sorted(mine, key=lambda p: (p.kind == "exclude", p.id)):
                yx = self.grid.to_canonical_voxel(p.position)[1:]
                if p.kind == "include":
                    current, quality = answer_include(self.segmenter, k, ctx, current, yx, self._neighbour(k))
                elif p.kind == "exclude":
                    current, quality = remove_around(self.segmenter, k, ctx, current, yx, includes)
                else:
                    a, b = yx, self.grid.to_canonical_voxel(p.corner)[1:]
                    box = (min(a[1], b[1]), min(a[0], b[0]), max(a[1], b[1]), max(a[0], b[0]))
                    current, quality = answer_box(self.segmenter, k, ctx, current, box)
            self._set_fixed(k, current)
        elif k in self._painted:  # no prompt left on a painted slice: the painting stays fixed
            self._set_fixed(k, current)
        else:  # no prompt left on the slice: back to what it was before them, no longer fixed
            self._canon[k] = current
            self._fixed.pop(k, None)
            if self._filled:
                self._pending.add(k)
            del self._base[k]
        return current, quality

    def _neighbour(self, k: int, reach_mm: float = 15.0) -> np.ndarray | None:
        """The segment on the canonical slice nearest to ``k`` (within ``reach_mm``) that has one, else None."""
        dz = max(1, int(round(reach_mm / max(float(canonical_spacing(self.volume)[2]), 1e-6))))
        for j in sorted(range(max(0, k - dz), min(self.hu.shape[0], k + dz + 1)), key=lambda j: abs(j - k)):
            if j != k and self._canon[j].any():
                return self._canon[j] > 0
        return None

    # -- background embedding ----------------------------------------------------------------------
    def prefetch(self, zs, cancel: CancelToken | None = None) -> int:
        """Embed the axial slices through input slices ``zs`` (those not cached yet), one at a
        time, checking ``cancel`` between them (a front end calls this in a background thread when
        the user scrolls, and cancels it when they move on). Returns how many were embedded."""
        done = 0
        for z in zs:
            if cancel is not None and cancel.cancelled:
                break
            if not 0 <= int(z) < self.volume.shape[0]:
                continue
            k = self.grid.to_canonical_voxel((int(z), 0, 0))[0]
            if not self.segmenter.is_cached(k):
                self.segmenter.precompute([k])
                done += 1
        return done

    # -- propagation -------------------------------------------------------------------------------
    def propagate(self, progress: Progress | None = None, cancel: CancelToken | None = None,
                  limits: list[tuple[int, int]] | None = None) -> VolumeAnswer:
        """Fill the volume from the fixed slices (first time), or re-propagate locally from the
        slices corrected since the last call. Fixed slices stay exactly as set. ``limits``: input z
        ranges (first, last; inclusive) the result may occupy, e.g. the z-range of a 3D box; kept for
        later calls until new limits are given. Cancelled (:class:`~polycl.errors.Cancelled`): nothing
        is changed."""
        from polycl.interact.fill import fill, local

        t0 = time.perf_counter()
        if limits is not None:
            inside = np.zeros(self.hu.shape[0], bool)
            for a, b in limits:
                ka, kb = (self.grid.to_canonical_voxel((int(v), 0, 0))[0] for v in (a, b))
                inside[min(ka, kb):max(ka, kb) + 1] = True
            self._limits = inside
        report = Reporter(progress, cancel, cancelled_message="propagation cancelled; nothing was changed")
        if not self._fixed and not self._filled:
            raise InputError("nothing to propagate: place a prompt or correct a slice first")
        before = self._canon.copy()
        work = self._canon.copy()
        if not self._filled:
            conf, mode = fill(self, work, report), "fill"
        else:
            conf, mode = local(self, work, sorted(self._pending), report), "local"
        if self._limits is not None:
            work[~self._limits] = 0
        for k, m in self._fixed.items():
            work[k] = m
        diff = np.flatnonzero((work != before).reshape(work.shape[0], -1).any(axis=1))
        self._snapshot(diff)
        self._undo[-1]["pending"] = set(self._pending)
        self._canon[:] = work
        self._filled, self._pending = True, set()
        zs = sorted(self._input_z(int(k)) for k in diff)
        answer = VolumeAnswer(self.mask, (zs[0], zs[-1]) if zs else None,
                              {self._input_z(k): float(c) for k, c in conf.items()}, self.engine_choice.name,
                              time.perf_counter() - t0, mode, zs)
        self.last_propagation = answer
        return answer
