"""Prompts on the slice views: include/exclude points, boxes and corrections, answered on one slice.

One :class:`polycl.interact.InteractiveSession` per (segmentation, segment) holds the prompts, the
fixed (corrected) slices and the mask; it shares the Logic's SAM segmenter, so Segment, Refine and
prompts embed each slice once. Prompts are markups the user sees and can move or delete: points in
two ``vtkMRMLMarkupsFiducialNode`` per segment ("include", green; "exclude", red), boxes as
``vtkMRMLMarkupsROINode``. Observers on those nodes turn a point placed, dragged or deleted in a
slice view into :meth:`PromptAnswers.addPoint` / :meth:`movePrompt` / :meth:`removePrompt`, so the
panel and the web page only put the view in place mode (the markup side: :mod:`PolyCLSegmentLib.promptmarkups`).

Each answer is a job on the worker thread (the slice answer is short; filling the volume has
progress and cancel) and is written on the GUI thread into the selected segment only, on the
answered slices only, with one undo state (the Logic's undo history,
the same one Segment and Refine use). Locked segments raise before anything changes; other
segments are never touched. RAS -> voxel conversion is :func:`PolyCLSegmentLib.conversions.voxelAtRas` (one place).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from PolyCLSegmentLib import conversions
from PolyCLSegmentLib.promptmarkups import Prompt, PromptMarkups

@dataclass
class Target:
    """The segment being prompted and its session (None until the first answer)."""

    volumeNodeId: str
    segmentationNodeId: str
    segmentId: str
    session: Any = None
    filled: bool = False  # the volume is filled: corrections re-propagate locally
    nodeIds: dict = field(default_factory=dict)  # "include"/"exclude" -> fiducial node ID


class PromptAnswers(PromptMarkups):
    """The prompt operations of :class:`~PolyCLSegmentLib.controller.Controller`, which owns this object
    and calls it (see the module docstring). What it needs of its owner comes in as arguments:
    ``logic`` (sessions' segmenters, CT reads, undo steps), ``settings()`` (the owner's current
    :class:`~PolyCLSegmentLib.settings.Settings`), ``startJob`` (the owner's one-job-at-a-time
    :meth:`~PolyCLSegmentLib.controller.Controller.startJob`) and ``background`` (a job beside it)."""

    def __init__(self, logic, settings: Callable[[], Any], startJob: Callable, background: Callable):
        self.logic = logic
        self._settings, self._startJob, self._background = settings, startJob, background
        self.targets: dict[tuple[str, str], Target] = {}
        self.prompts: dict[str, Prompt] = {}
        self._count = 0
        self._quiet = False  # set while this class edits markups (its own changes are no user actions)
        self._observed: list[tuple[Any, int]] = []
        self._prefetch: list = []
        #: per segmentation node: what each undo state of the shared history was ("prompt" entries
        #: carry the prompt, so undo also steps the session back and removes its markup)
        self.log: dict[str, list] = {}

    # ------------------------------------------------------------------ bookkeeping
    @property
    def settings(self):
        """The owner's settings (a front end replaces them before each operation)."""
        return self._settings()

    def record(self, segmentationNodeId: str, entry) -> None:
        """Note what the undo state just saved on this segmentation was (None: an operation)."""
        entries = self.log.setdefault(segmentationNodeId, [])
        entries.append(entry)
        del entries[:-self.logic.undoStates]
        if entry is None:  # Segment/Refine/Propagate rewrote the segment: sessions start again from it,
            for key in [k for k in self.targets if k[0] == segmentationNodeId]:  # without the old prompts
                self.targets[key].session = None
                self.targets[key].filled = False
                self._dropPrompts(lambda k, key=key: k == key)

    def _target(self, volumeNode, segmentationNode, segmentId) -> Target:
        conversions.requireScalarVolume(volumeNode)
        self.logic.requireSegment(segmentationNode, segmentId, writable=True)
        key = (segmentationNode.GetID(), segmentId)
        target = self.targets.get(key)
        if target is None or target.volumeNodeId != volumeNode.GetID():
            target = self.targets[key] = Target(volumeNode.GetID(), key[0], segmentId)
        return target

    @staticmethod
    def _nodes(target: Target):
        import slicer

        return (slicer.mrmlScene.GetNodeByID(target.volumeNodeId),
                slicer.mrmlScene.GetNodeByID(target.segmentationNodeId))

    def _newPromptId(self) -> str:
        self._count += 1
        return f"prompt-{self._count}"

    # ------------------------------------------------------------------ prompts
    def addPoint(self, volumeNode, segmentationNode, segmentId, ras, include=True, *, pointId=None,
                 onDone: Callable | None = None) -> str:
        ras = _ras(ras)
        zyx = conversions.voxelAtRas(volumeNode, ras)
        target = self._target(volumeNode, segmentationNode, segmentId)
        node = self.pointNode(volumeNode, segmentationNode, segmentId, include)
        if pointId is None:
            self._quiet = True
            try:
                index = node.AddControlPointWorld(*[float(v) for v in ras[:3]])
                pointId = node.GetNthControlPointID(index)
            finally:
                self._quiet = False
        prompt = Prompt(self._newPromptId(), "include" if include else "exclude",
                        (target.segmentationNodeId, segmentId), node.GetID(), pointId, ras=tuple(ras))
        wasEmpty = target.session is None and not conversions.segmentArray(segmentationNode, segmentId,
                                                                               volumeNode)[zyx[0]].any()
        self._answer(target, prompt, lambda s: s.add_point(zyx, include=include), onDone,
                     fill=include and wasEmpty)
        return prompt.id

    def addBox(self, volumeNode, segmentationNode, segmentId, ras0, ras1, onDone: Callable | None = None) -> str:
        ras0, ras1 = _ras(ras0), _ras(ras1)
        (z0, y0, x0), (z1, y1, x1) = (conversions.voxelAtRas(volumeNode, r) for r in (ras0, ras1))
        target = self._target(volumeNode, segmentationNode, segmentId)
        prompt = Prompt(self._newPromptId(), "box", (target.segmentationNodeId, segmentId),
                        self._newBoxNode(ras0, ras1), ras=tuple(float(v) for v in ras0[:3]),
                        ras1=tuple(float(v) for v in ras1[:3]))
        z = z0
        box = ((z, min(y0, y1), min(x0, x1)), (z, max(y0, y1), max(x0, x1)))
        self._answer(target, prompt, lambda s: s.add_box(*box), onDone)
        return prompt.id

    def movePrompt(self, promptId: str, ras, ras1=None, onDone: Callable | None = None) -> None:
        prompt = self._prompt(promptId)
        target = self.targets[prompt.key]
        volumeNode, _ = self._nodes(target)
        ras, ras1 = _ras(ras), (None if ras1 is None else _ras(ras1))
        zyx = conversions.voxelAtRas(volumeNode, ras)
        before = (prompt.ras, prompt.ras1)
        self._setMarkup(prompt, ras, ras1)
        prompt.ras = tuple(float(v) for v in ras[:3])
        if ras1 is not None:
            prompt.ras1 = tuple(float(v) for v in ras1[:3])
        if prompt.kind == "box" and ras1 is not None:
            z, y0, x0 = zyx
            _, y1, x1 = conversions.voxelAtRas(volumeNode, ras1)
            self._answer(target, prompt, lambda s: s.move_prompt(prompt.sessionId, (z, min(y0, y1), min(x0, x1)),
                                                                 (z, max(y0, y1), max(x0, x1))), onDone, new=False,
                         moved=before)
        else:
            self._answer(target, prompt, lambda s: s.move_prompt(prompt.sessionId, zyx), onDone, new=False,
                         moved=before)

    def removePrompt(self, promptId: str, onDone: Callable | None = None) -> None:
        prompt = self._prompt(promptId)
        target = self.targets[prompt.key]
        self._removeMarkup(prompt)
        self._answer(target, prompt, lambda s: s.remove_prompt(prompt.sessionId), onDone, new=False, removed=True)

    def _prompt(self, promptId: str) -> Prompt:
        from polycl.errors import InputError

        if promptId not in self.prompts:
            raise InputError(f"no prompt '{promptId}' (it was removed or undone)")
        return self.prompts[promptId]

    def correctSlice(self, volumeNode, segmentationNode, segmentId, sliceIndex: int,
                     onDone: Callable | None = None) -> None:
        """Slice ``sliceIndex`` as it is in the segment now (painted/erased) becomes a fixed seed;
        a volume filled from clicks is re-propagated locally from it."""
        from polycl.errors import InputError

        target = self._target(volumeNode, segmentationNode, segmentId)
        dims = volumeNode.GetImageData().GetDimensions()
        if not 0 <= int(sliceIndex) < dims[2]:
            raise InputError(f"slice {sliceIndex} is outside the volume (0..{dims[2] - 1})")
        drawn = conversions.segmentArray(segmentationNode, segmentId, volumeNode)[int(sliceIndex)]

        def apply(answer):  # the segment already shows the painted slice: one undo state for the session step
            self._write(target, None, None, {})
            return target.segmentId

        self._run(target, "correction", lambda s: s.correct_slice(int(sliceIndex), drawn), apply,
                  then=self._thenPropagate(target, onDone))

    def propagate(self, volumeNode, segmentationNode, segmentId, onDone: Callable | None = None) -> None:
        """Fill (or locally re-propagate) the volume from the session's prompted and fixed slices."""
        target = self._target(volumeNode, segmentationNode, segmentId)

        def apply(result):
            lo, hi = result.changed if result.changed else (0, -1)
            slab = result.mask[lo:hi + 1] if hi >= lo else None
            self._write(target, slab, lo, {"Operation": "propagate from prompts",
                                           "PropagationEngine": result.engine, "Stats": result.mode})
            target.filled = True
            return target.segmentId

        self._run(target, "propagate from prompts", lambda s, progress, cancel: s.propagate(progress=progress,
                                                                                           cancel=cancel),
                  apply, then=onDone, withProgress=True)

    # ------------------------------------------------------------------ running answers
    def _answer(self, target: Target, prompt: Prompt, ask: Callable, onDone, *, new: bool = True,
                removed: bool = False, moved: tuple | None = None, fill: bool = False) -> None:
        """Run ``ask(session)`` (a SliceAnswer) on the worker; write the answered slices when done.
        ``moved``: the markup's place before a move, (ras, ras1), so that undo puts it back."""
        step = (prompt, "added") if new else (prompt, "removed") if removed else (prompt, "moved", moved)

        if new:  # known at once, so that a second event on its markup does not add it twice
            self.prompts[prompt.id] = prompt

        def apply(answer):
            if new:
                prompt.sessionId = answer.prompt_id
            elif removed:
                self.prompts.pop(prompt.id, None)
            zs = sorted(set(answer.changed) | {int(answer.slice)})
            # usually only the answered slice changed: write its (y, x) mask, not the whole volume's
            slab = answer.mask2d[None] if zs == [int(answer.slice)] else answer.mask[zs[0]:zs[-1] + 1]
            self._write(target, slab, zs[0], {
                "Operation": "prompt", "SamModel": self.settings.samModel,
                "Prompts": f"{prompt.kind} on slice {int(answer.slice)}"}, step)
            return target.segmentId

        def failed():
            if new:
                self.prompts.pop(prompt.id, None)
                self._removeMarkup(prompt)

        self._run(target, f"{prompt.kind} prompt", ask, apply, then=self._thenPropagate(target, onDone, fill),
                  onFail=failed)

    def _thenPropagate(self, target: Target, onDone, fill: bool = False) -> Callable:
        """After a prompt or correction: with "propagate from clicks", fill the volume (the first
        include click on an empty segment) or re-propagate locally (a filled volume); else ``onDone``."""
        volumeNode, segmentationNode = self._nodes(target)

        def then(segmentId):
            filled = target.session is not None and target.session.filled
            if self.settings.propagateFromClicks and (fill or filled):
                self.propagate(volumeNode, segmentationNode, segmentId, onDone=onDone)
            elif onDone is not None:
                onDone(segmentId)

        return then

    def _write(self, target: Target, slab, first: int | None, provenance: dict, step: tuple | None = None) -> None:
        """Write ``slab`` ((n, y, x)) as slices ``first``.. of the segment with one undo state (also
        when there is nothing to write, ``slab`` None: every session step is one undo step); log it
        with ``step`` ((prompt, "added" | "removed" | "moved", (ras, ras1)): what undo does to its markup)."""
        volumeNode, segmentationNode = self._nodes(target)
        if slab is None:
            self.logic.requireSegment(segmentationNode, target.segmentId, writable=True)
            self.logic.saveUndoState(segmentationNode)
        else:
            self.logic.writeSlices(segmentationNode, volumeNode, target.segmentId, np.asarray(slab, np.uint8),
                                   int(first), provenance)
        self.record(target.segmentationNodeId, ("session", target, target.session, step))

    def _run(self, target: Target, name: str, compute: Callable, apply: Callable, *, then=None, onFail=None,
             withProgress: bool = False) -> None:
        """One job: the session is made (from the segment as it is now) on the GUI thread's copy of the
        voxels, used on the worker thread; ``apply`` runs on the GUI thread in poll()."""
        for job in self._prefetch:  # the user acts here now: stop embedding elsewhere
            job.cancel()
        self._prefetch.clear()
        volumeNode, segmentationNode = self._nodes(target)
        seed = None
        if target.session is None:
            volume = self.logic.readCT(volumeNode)
            mask = conversions.segmentArray(segmentationNode, target.segmentId, volumeNode)
            seed = (volume, mask)
        s = self.settings

        def work(_request, progress, cancel):
            if target.session is None:
                from polycl.interact import InteractiveSession

                volume, mask = seed
                target.session = InteractiveSession(
                    volume, mask if mask.any() else None, backend=s.samModel, device=s.device, engine=s.engine,
                    segmenter=self.logic.segmenterFor(volume, s.samModel, s.device))
            return compute(target.session, progress, cancel) if withProgress else compute(target.session)

        def applied(answer):
            self._onFail = None
            return apply(answer)

        try:
            self._startJob(name, lambda: None, work, apply=applied, onDone=then, record=False)
        except Exception:
            if onFail is not None:
                onFail()
            raise
        self._onFail = onFail

    def onJobFailed(self) -> None:
        """The last prompt's job failed or was cancelled: its markup goes (nothing was written)."""
        onFail, self._onFail = getattr(self, "_onFail", None), None
        if onFail is not None:
            onFail()

    # ------------------------------------------------------------------ undo, clear, finish, prefetch
    def onUndone(self, segmentationNode) -> None:
        """The shared history stepped back on this segmentation: step its session back with it, and
        its markups with it (a prompt the step added goes, one it removed comes back, one it moved
        goes back to where it was)."""
        entries = self.log.get(segmentationNode.GetID())
        entry = entries.pop() if entries else None
        if entry is None:
            return
        _, target, session, step = entry
        if session is not None and target.session is session:
            session.undo()
            target.filled = session.filled
        if step is None:
            return
        prompt, action = step[0], step[1]
        if action == "added":
            self._removeMarkup(prompt)
            self.prompts.pop(prompt.id, None)
        elif action == "removed":
            self._restoreMarkup(prompt)
            self.prompts[prompt.id] = prompt
        else:
            ras, ras1 = step[2]  # where the markup was before the move (ras1: a box's second corner, else ())
            self._setMarkup(prompt, np.asarray(ras), np.asarray(ras1) if ras1 else None)
            prompt.ras, prompt.ras1 = ras, ras1

    def _dropPrompts(self, match: Callable) -> None:
        """Forget the prompts whose (segmentation, segment) key ``match``es, and remove their markups."""
        for prompt in [p for p in self.prompts.values() if match(p.key)]:
            self._removeMarkup(prompt)
            self.prompts.pop(prompt.id)

    def clearPrompts(self, segmentationNode=None, segmentId=None) -> None:
        self._dropPrompts(lambda key: _matches(key, segmentationNode, segmentId))
        for key, target in self.targets.items():
            if _matches(key, segmentationNode, segmentId) and target.session is not None:
                target.session.clear_prompts()
                self._write(target, None, None, {})

    def finishSegment(self, segmentationNode=None, segmentId=None) -> None:
        import slicer

        self.clearPrompts(segmentationNode, segmentId)
        for key in [k for k in self.targets if _matches(k, segmentationNode, segmentId)]:
            target = self.targets.pop(key)
            for nodeId in target.nodeIds.values():
                node = slicer.mrmlScene.GetNodeByID(nodeId)
                if node is not None:
                    self._quiet = True
                    slicer.mrmlScene.RemoveNode(node)
                    self._quiet = False

    def prefetchAround(self, volumeNode, sliceIndex: int, radius: int = 1, delay: float = 0.3) -> bool:
        """Embed the slices ``sliceIndex +- radius`` on the worker thread, so the first click on a
        slice the user scrolled to rarely waits. Only while a segment of ``volumeNode`` is being
        prompted (its session holds the CT's voxels and the shared segmenter: nothing is copied on
        the GUI thread). The work starts after ``delay`` s and is cancelled by the next call or the
        next prompt, so scrolling through many slices embeds only where the user stops. Returns
        whether a prefetch was queued."""
        import time

        session = next((t.session for t in self.targets.values()
                        if t.session is not None and t.volumeNodeId == volumeNode.GetID()), None)
        if session is None:
            return False
        for job in self._prefetch:
            job.cancel()
        zs = list(range(sliceIndex - radius, sliceIndex + radius + 1))

        def work(job):
            end = time.monotonic() + delay
            while time.monotonic() < end:  # the user may still be scrolling
                if job.token.cancelled:
                    return
                time.sleep(0.02)
            session.prefetch(zs, cancel=job.token)

        self._prefetch = [self._background(work, name="prefetch")]
        return True

    def reset(self) -> None:
        """Every prompt session ends and its markups go; the bookkeeping is dropped even when removing
        the markups fails (a segmentation that is gone already; the error is raised after)."""
        try:
            self.finishSegment()
        finally:
            self.targets.clear()
            self.prompts.clear()

    def shutdown(self) -> None:
        for node, tag in self._observed:
            node.RemoveObserver(tag)
        self._observed.clear()
        for job in self._prefetch:
            job.cancel()


def _matches(key, segmentationNode, segmentId) -> bool:
    sameNode = segmentationNode is None or key[0] == segmentationNode.GetID()
    return sameNode and (segmentId is None or key[1] == segmentId)


def _ras(point) -> np.ndarray:
    """A RAS point (list, array or vtkVector3d) as a float array (3,)."""
    return np.array([float(point[0]), float(point[1]), float(point[2])])
