"""The one controller under every front end (the Slicer panel, the web page). No Qt.

A front end turns its state into :class:`~PolyCLSegmentLib.settings.Settings` (``controller.settings =
Settings.read(parameterNode)``), builds one typed request per operation from its selection, calls
the operation, and polls::

    controller = Controller()                       # or Controller(logic=PolyCLSegmentLogic())
    controller.segment(SegmentRequest(volumeNode, segmentationNode), onDone=selectSegment)
    update = controller.poll()                      # from a timer on the GUI thread: progress, result, error
    controller.cancel()
    controller.undo(segmentationNode)               # one undo: operations and prompts alike

Interactive operations run on one worker thread (:mod:`PolyCLSegmentLib.jobs.thread`), fine-tuning and
batch runs in a ``polycl`` subprocess (:mod:`PolyCLSegmentLib.jobs.process`); both through one
:class:`~PolyCLSegmentLib.jobs.JobRunner`. MRML is read and written only in the calls above and in
:meth:`poll` (the GUI thread). Prompts (include/exclude points, boxes, corrections) are methods of
:class:`~PolyCLSegmentLib.promptanswers.PromptAnswers`, reached through the same names here.
:data:`Controller.OPERATIONS` names every operation a front end may call; a test checks that the
panel and the web page call these and wire none themselves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from PolyCLSegmentLib import capabilities, conversions, prompts
from PolyCLSegmentLib.jobs import JobRunner, Update
from PolyCLSegmentLib.settings import Settings


@dataclass
class SegmentRequest:
    """Segment ``volumeNode`` into a new segment (or replace ``segmentId``); a None segmentation makes one."""

    volumeNode: Any
    segmentationNode: Any = None
    segmentId: str | None = None
    segmentName: str | None = None


@dataclass
class RefineRequest:
    """SAM refinement of ``segmentId`` (automatic boxes) and/or of drawn ROI boxes (``roiNodes``)."""

    volumeNode: Any
    segmentationNode: Any
    segmentId: str | None = None
    roiNodes: Sequence[Any] = ()
    newSegment: bool = False


@dataclass
class PropagateRequest:
    """Propagate ``segmentId`` from slice ``sliceIndex`` (IJK k; None: the slice under the red view)."""

    volumeNode: Any
    segmentationNode: Any
    segmentId: str | None
    sliceIndex: int | None = None
    newSegment: bool = False
    limits: tuple[int, int] | None = None


@dataclass
class FinetuneRequest:
    """Fine-tune on a folder of labelled CT; name, target, epochs and label fraction from the settings."""

    folder: str | Path
    encoder: str | None = None
    resume: bool = False
    extraArgs: Sequence[str] = field(default_factory=tuple)


@dataclass
class BatchRequest:
    """Segment every CT of ``inputFolder`` into ``outputFolder`` (resumable) with the settings' model and mode."""

    inputFolder: str | Path
    outputFolder: str | Path
    overwrite: bool = False


class Controller:
    """Every operation of PolyCL Segment, for any front end (see the module docstring)."""

    #: The operations a front end calls (a test checks both front ends call these and no Logic directly).
    OPERATIONS = ("segment", "refine", "propagate", "finetune", "batch", "undo", "cancel",
                  "addPoint", "addBox", "movePrompt", "removePrompt", "correctSlice", "propagateFromClicks",
                  "clearPrompts", "finishSegment", "resetPrompts", "sliceChanged", "placeList", "promptCount",
                  "checkCT", "windowPresets", "windowLevel", "applyWindowPreset", "dragWindowLevel", "segments",
                  "setSegmentVisible", "setSegmentLocked", "deleteSegment", "nextSegment", "overlayPicture")

    def __init__(self, logic=None, settings: Settings | None = None):
        if logic is None:
            from PolyCLSegmentLib.logic import PolyCLLogic

            logic = PolyCLLogic()
        from PolyCLSegmentLib.promptanswers import PromptAnswers

        self.logic = logic
        self.settings = settings or Settings()
        self.runner = JobRunner()
        self.promptAnswers = PromptAnswers(logic, lambda: self.settings, self.startJob, self.background)

    # ------------------------------------------------------------------ what the front ends show
    @staticmethod
    def choices() -> dict[str, list[tuple[str, str, str]]]:
        """(value, label, tooltip) lists for the mode, device and engine boxes."""
        return {"modes": list(capabilities.SEGMENT_MODES), "devices": capabilities.deviceChoices(),
                "engines": capabilities.engineChoices()}

    def listModels(self) -> list[dict]:
        """Segmentation models with ``name``, ``target``, ``source``, ``scores``, ``tooltip``, ``available``."""
        return self.logic.listModels() if capabilities.coreInstalled() else []

    @property
    def busy(self) -> bool:
        return self.runner.busy

    def canUndo(self, segmentationNode) -> bool:
        return segmentationNode is not None and self.logic.canUndo(segmentationNode)

    def checkCT(self, volumeNode) -> None:
        """Raise the module's error unless ``volumeNode`` is a CT that Segment accepts (changes nothing)."""
        self.logic.readCT(volumeNode)

    def promptCount(self) -> int:
        """How many prompts (points and boxes, all segments) are shown."""
        return len(self.promptAnswers.prompts)

    # ------------------------------------------------------------------ geometry: one place
    @staticmethod
    def sliceIndexAtRas(volumeNode, ras) -> int:
        """The volume's IJK k of the axial slice through the RAS point (clipped to the volume)."""
        return prompts.sliceIndexAtRas(volumeNode, ras)

    @staticmethod
    def voxelAtRas(volumeNode, ras) -> tuple[int, int, int]:
        """The (z, y, x) voxel (array indices of slicer.util.arrayFromVolume) containing a RAS point;
        raises InputError outside the volume."""
        return conversions.voxelAtRas(volumeNode, ras)

    @staticmethod
    def rasOfVoxel(volumeNode, zyx) -> np.ndarray:
        """RAS (mm) of voxel (z, y, x) (fractional indices allowed)."""
        z, y, x = zyx
        return (conversions.ijkToRasArray(volumeNode) @ np.array([x, y, z, 1.0]))[:3]

    def sliceIndexOfView(self, volumeNode, sliceNode=None) -> int:
        """The volume's IJK k under a slice view (default: the red view's ``vtkMRMLSliceNodeRed``)."""
        import slicer
        from polycl.errors import InputError

        sliceNode = sliceNode or slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNodeRed")
        if sliceNode is None:
            raise InputError("no red slice view: give the slice index")
        return self.sliceIndexAtRas(volumeNode, slicer.util.arrayFromVTKMatrix(sliceNode.GetSliceToRAS())[:3, 3])

    def sliceCenterRas(self, volumeNode, sliceIndex: int) -> np.ndarray:
        """RAS (mm) of the centre of axial slice ``sliceIndex`` (to move a view there)."""
        dims = volumeNode.GetImageData().GetDimensions()
        return self.rasOfVoxel(volumeNode, (sliceIndex, (dims[1] - 1) / 2, (dims[0] - 1) / 2))

    @staticmethod
    def segmentArray(segmentationNode, segmentId: str, volumeNode) -> np.ndarray:
        """uint8 (z, y, x) mask of a segment on the volume's grid (slicer.util)."""
        return conversions.segmentArray(segmentationNode, segmentId, volumeNode)

    # ------------------------------------------------------------------ running
    def background(self, work: Callable, name: str = "background"):
        """Run ``work(job)`` on the worker thread beside the running job (cancelled with its token;
        the prompt sessions' prefetch of slice embeddings); returns the job."""
        return self.runner.background(work, name=name)

    def startJob(self, name: str, prepare: Callable[[], Any], compute: Callable, apply: Callable | None = None,
                 onDone: Callable | None = None, record: bool = True) -> None:
        """``prepare()`` here (raises before any change), ``compute`` on the worker thread, ``apply``
        (default: the Logic's applyOutcome) in :meth:`poll`, then ``onDone(value)``. ``record``: the
        result is a whole operation (undo then steps back over it, and prompt sessions restart)."""
        from polycl.errors import InputError

        if self.runner.busy:
            raise InputError("another operation is running; wait for it or cancel it")
        apply = apply or self.logic.applyOutcome

        def applyAndRecord(outcome):
            value = apply(outcome)
            self.promptAnswers.record(outcome.request.segmentationNodeId, None)
            return value

        self.runner.start(name, compute, prepare(), apply=applyAndRecord if record else apply, onDone=onDone)

    def poll(self) -> Update | None:
        """Progress of the running operation (None when idle); the finished one is written to MRML here."""
        update = self.runner.poll()
        if update is not None and update.finished and (update.error or update.cancelled):
            self.promptAnswers.onJobFailed()
        return update

    def wait(self, timeout: float = 600.0, interval: float = 0.02) -> Update | None:
        """Poll until the running operation (and any it chains, e.g. propagation after a click) ends;
        returns the last finished Update. For the Python console and tests."""
        deadline, last = time.monotonic() + timeout, None
        while self.runner.busy:
            update = self.poll()
            if update is not None and update.finished:
                last = update
            if time.monotonic() > deadline:
                raise TimeoutError(f"still running after {timeout} s")
            time.sleep(interval)
        return last

    def cancel(self) -> None:
        """Cancel the running job (nothing changes) or process tree (fine-tuning keeps its resumable state)."""
        self.runner.cancel()

    def shutdown(self) -> None:
        self.promptAnswers.shutdown()
        self.runner.shutdown()

    # ------------------------------------------------------------------ operations
    def segment(self, request: SegmentRequest, onDone: Callable | None = None) -> None:
        s = self.settings.validate()
        self.startJob("segment", lambda: self.logic.prepareSegment(
            request.volumeNode, request.segmentationNode, model=s.model, mode=s.segmentMode,
            segmentId=request.segmentId, segmentName=request.segmentName, overwriteOthers=s.overwriteOthers,
            device=s.device, samModel=s.samModel, engine=s.engine, prior=s.prior), self.logic.computeSegment,
            onDone=onDone)

    def refine(self, request: RefineRequest, onDone: Callable | None = None) -> None:
        s = self.settings.validate()
        self.startJob("refine", lambda: self.logic.prepareRefine(
            request.volumeNode, request.segmentationNode, request.segmentId, roiNodes=list(request.roiNodes) or None,
            samModel=s.samModel, device=s.device, newSegment=request.newSegment,
            overwriteOthers=s.overwriteOthers), self.logic.computeRefine, onDone=onDone)

    def propagate(self, request: PropagateRequest, onDone: Callable | None = None) -> None:
        s = self.settings.validate()

        def prepare():
            k = request.sliceIndex if request.sliceIndex is not None else self.sliceIndexOfView(request.volumeNode)
            return self.logic.preparePropagate(
                request.volumeNode, request.segmentationNode, request.segmentId, k, engine=s.engine,
                stopAfter=s.stopAfter or None, device=s.device, newSegment=request.newSegment,
                overwriteOthers=s.overwriteOthers, limits=request.limits)

        self.startJob("propagate", prepare, self.logic.computePropagate, onDone=onDone)

    def finetune(self, request: FinetuneRequest, onDone: Callable | None = None) -> None:
        """``polycl finetune`` in a subprocess; ``onDone(process)`` when it succeeded (the model is listed)."""
        s = self.settings.validate()
        self._startProcess("fine-tuning", lambda: self.logic.finetune(
            request.folder, s.finetuneName, target=s.finetuneTarget, epochs=s.finetuneEpochs,
            labelFraction=s.labelFraction, device=s.device, encoder=request.encoder, resume=request.resume,
            extraArgs=request.extraArgs), onDone)

    def batch(self, request: BatchRequest, onDone: Callable | None = None) -> None:
        """``polycl segment`` on a folder in a subprocess (resumable; report.csv in the output folder)."""
        s = self.settings.validate()
        self._startProcess("batch", lambda: self.logic.segmentFolder(
            request.inputFolder, request.outputFolder, model=s.model, device=s.device, mode=s.segmentMode,
            overwrite=request.overwrite, inProcess=False, prior=s.prior), onDone)

    def _startProcess(self, name: str, start: Callable, onDone: Callable | None) -> None:
        from polycl.errors import InputError

        if self.runner.busy:
            raise InputError("another operation is running; wait for it or cancel it")
        self.runner.startProcess(name, start(), onDone=onDone)

    def undo(self, segmentationNode) -> bool:
        """Step back the last change of this module to the segmentation: one operation or one prompt."""
        if segmentationNode is None or self.runner.busy:
            return False
        if not self.logic.undo(segmentationNode):
            return False
        self.promptAnswers.onUndone(segmentationNode)
        return True

    # ------------------------------------------------------------------ view and segments (display.py)
    @staticmethod
    def windowPresets() -> list[str]:
        """The CT window presets, in the order to offer them (:data:`PolyCLSegmentLib.display.WINDOW_PRESETS`)."""
        from PolyCLSegmentLib.display import WINDOW_PRESETS

        return list(WINDOW_PRESETS)

    @staticmethod
    def windowLevel(volumeNode) -> tuple[float, float]:
        """(window, level) in HU the CT is shown with."""
        from PolyCLSegmentLib.display import windowLevel

        return windowLevel(volumeNode)

    @staticmethod
    def applyWindowPreset(volumeNode, name: str) -> tuple[float, float]:
        """Show the CT with a window preset; returns (window, level) in HU."""
        from PolyCLSegmentLib.display import applyPreset

        return applyPreset(volumeNode, name)

    @staticmethod
    def dragWindowLevel(volumeNode, dx: float, dy: float) -> tuple[float, float]:
        """Window/level by a mouse drag of (dx, dy) screen pixels; returns (window, level) in HU."""
        from PolyCLSegmentLib.display import dragWindowLevel

        return dragWindowLevel(volumeNode, dx, dy)

    @staticmethod
    def segments(segmentationNode) -> list[dict]:
        """The segments to list: ``id``, ``name``, ``color``, ``visible``, ``locked``."""
        from PolyCLSegmentLib.display import segmentRows

        return segmentRows(segmentationNode)

    @staticmethod
    def setSegmentVisible(segmentationNode, segmentId: str, visible: bool) -> None:
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.GetDisplayNode().SetSegmentVisibility(segmentId, bool(visible))

    @staticmethod
    def setSegmentLocked(segmentationNode, segmentId: str, locked: bool) -> None:
        """A locked segment is never changed by this module (Segment, prompts, overwrite) or deleted here."""
        from PolyCLSegmentLib.segmentedit import setSegmentLocked

        setSegmentLocked(segmentationNode.GetSegmentation().GetSegment(segmentId), locked)
        segmentationNode.Modified()

    def deleteSegment(self, segmentationNode, segmentId: str) -> None:
        """Remove a segment (undoable with :meth:`undo`); a locked one is refused, its prompts end."""
        from polycl.errors import InputError
        from PolyCLSegmentLib.segmentedit import isSegmentLocked

        if self.runner.busy:
            raise InputError("an operation is running; wait for it or cancel it")
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise InputError(f"no segment '{segmentId}'")
        if isSegmentLocked(segment):
            raise InputError(f"segment '{segment.GetName()}' is locked; unlock it to delete it")
        self.promptAnswers.finishSegment(segmentationNode, segmentId)
        self.logic.saveUndoState(segmentationNode)
        self.promptAnswers.record(segmentationNode.GetID(), None)  # an operation: undo steps back over it
        segmentationNode.GetSegmentation().RemoveSegment(segmentId)

    def nextSegment(self, segmentationNode) -> str:
        """Finish prompting and start a new, empty segment ("Segment N"); returns its ID (undoable)."""
        from polycl.errors import InputError

        if self.runner.busy:
            raise InputError("an operation is running; wait for it or cancel it")
        self.promptAnswers.finishSegment(segmentationNode)
        self.logic.saveUndoState(segmentationNode)
        self.promptAnswers.record(segmentationNode.GetID(), None)
        segmentation = segmentationNode.GetSegmentation()
        names = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
        n = segmentation.GetNumberOfSegments() + 1
        while f"Segment {n}" in names:
            n += 1
        return segmentation.AddEmptySegment("", f"Segment {n}")

    @staticmethod
    def overlayPicture(volumeNode, segmentationNode, segmentId: str, path) -> Path | None:
        """A PNG of the segment over the CT (axial, coronal and sagittal slices through its centre, as
        ``polycl demo`` draws them), written atomically to ``path``; None for an empty segment (nothing
        to draw, nothing written)."""
        from polycl.atomic import atomic_path
        from polycl.overlay import save_overlay

        mask = conversions.segmentArray(segmentationNode, segmentId, volumeNode)
        if not mask.any():
            return None
        name = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()
        with atomic_path(path, ".png") as tmp:
            save_overlay(conversions.volumeFromNode(volumeNode), mask, tmp, title=name)
        return Path(path)

    # ------------------------------------------------------------------ prompts (see promptanswers.py)
    def addPoint(self, volumeNode, segmentationNode, segmentId: str, ras, include: bool = True,
                 onDone: Callable | None = None) -> str:
        """An include (or exclude) click at RAS ``ras`` on the selected segment; returns the prompt's ID."""
        return self.promptAnswers.addPoint(volumeNode, segmentationNode, segmentId, ras, include, onDone=onDone)

    def addBox(self, volumeNode, segmentationNode, segmentId: str, ras0, ras1, onDone: Callable | None = None) -> str:
        """A box prompt between two RAS corners on one axial slice; returns the prompt's ID."""
        return self.promptAnswers.addBox(volumeNode, segmentationNode, segmentId, ras0, ras1, onDone=onDone)

    def movePrompt(self, promptId: str, ras, ras1=None, onDone: Callable | None = None) -> None:
        """Move a point (or a box, with its second corner ``ras1``) and re-answer its slice."""
        self.promptAnswers.movePrompt(promptId, ras, ras1, onDone=onDone)

    def removePrompt(self, promptId: str, onDone: Callable | None = None) -> None:
        self.promptAnswers.removePrompt(promptId, onDone=onDone)

    def correctSlice(self, volumeNode, segmentationNode, segmentId: str, sliceIndex: int,
                     onDone: Callable | None = None) -> None:
        """Slice ``sliceIndex`` of the segment, as the user painted it, becomes a fixed seed; when the
        volume was filled from clicks, it is re-propagated locally (a job)."""
        self.promptAnswers.correctSlice(volumeNode, segmentationNode, segmentId, sliceIndex, onDone=onDone)

    def propagateFromClicks(self, volumeNode, segmentationNode, segmentId: str, onDone: Callable | None = None) -> None:
        """Fill the volume from the prompted and corrected slices (a job with progress and cancel)."""
        self.promptAnswers.propagate(volumeNode, segmentationNode, segmentId, onDone=onDone)

    def clearPrompts(self, segmentationNode=None, segmentId: str | None = None) -> None:
        """Remove the prompt markups (of one segment, or all); the segment keeps its voxels."""
        self.promptAnswers.clearPrompts(segmentationNode, segmentId)

    def finishSegment(self, segmentationNode=None, segmentId: str | None = None) -> None:
        """End prompting on the segment: markups removed, the session (embeddings, seeds) dropped."""
        self.promptAnswers.finishSegment(segmentationNode, segmentId)

    def resetPrompts(self) -> None:
        """A new CT: every prompt session ends and its markups go; bookkeeping of a segmentation that
        is gone already is dropped even when removing its markups fails (the error is raised after)."""
        self.promptAnswers.reset()

    def placeList(self, volumeNode, segmentationNode, segmentId: str, include: bool = True):
        """The markups node a front end makes the active place list for include (exclude) clicks on a
        segment: each point placed on it becomes a prompt (raises for a missing or locked segment)."""
        return self.promptAnswers.pointNode(volumeNode, segmentationNode, segmentId, include)

    def sliceChanged(self, volumeNode, sliceIndex: int, radius: int = 1) -> bool:
        """The user scrolled to IJK slice ``sliceIndex``: while a segment of this CT is being prompted
        and no job runs, the slices around it are embedded in the background (debounced, cancelled by
        the next scroll or prompt). Returns whether a prefetch was queued."""
        if volumeNode is None or self.busy:
            return False
        return self.promptAnswers.prefetchAround(volumeNode, sliceIndex, radius)
