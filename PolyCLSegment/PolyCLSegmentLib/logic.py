"""The module's Logic: Segment, Refine, Propagate, batch and fine-tuning on MRML nodes. No Qt.

Each interactive operation has three steps, so that a front end can run the middle one on its
worker thread: ``prepare*`` (GUI thread: checks inputs, copies voxels; raises before any change),
``compute*`` (any thread: one call of :mod:`polycl.segment`, :mod:`polycl.refine` or propagation;
``progress(done, total, message)``
and a ``cancel`` token as in :mod:`polycl.progress`) and :meth:`applyOutcome` (GUI thread: saves
undo state, writes the segment). :meth:`segment`, :meth:`refine` and :meth:`propagate` chain the
three for the Python console. ``PolyCLSegmentLogic`` (PolyCLSegment.py) is this class plus
Slicer's ``ScriptedLoadableModuleLogic``; front ends drive it through
:class:`PolyCLSegmentLib.controller.Controller`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from PolyCLSegmentLib import capabilities, conversions, prompts, segmentedit, terminology
from PolyCLSegmentLib.jobs import JobInput, Outcome


def printLine(done, total, message: str) -> None:
    """The console's progress for batch runs: each case's report line."""
    print(message)


class PolyCLLogic:
    """Segment, refine, propagate, fine-tune and batch, on MRML nodes. No Qt, no dialogs."""

    def __init__(self):
        self.history = segmentedit.UndoHistory()
        self._models: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._segmenters = None  # polycl.sam.SegmenterCache, made on first SAM use

    # ------------------------------------------------------------------ shared state
    def segmenterFor(self, volume, samModel: str = "litemedsam", device: str = "auto"):
        """The SAM slice segmenter of ``volume`` (a polycl Volume), shared by Segment, Refine,
        Propagate and prompts on the same CT so that no slice is embedded twice (the last CT's
        embeddings are kept)."""
        from polycl.sam import SegmenterCache

        with self._lock:
            if self._segmenters is None:
                self._segmenters = SegmenterCache()
        return self._segmenters.get(volume, backend=samModel, device=device)

    @staticmethod
    def listModels() -> list[dict]:
        """Segmentation models (bundled and the user's) then the atlas-based targets (``atlas:<organ>``,
        no network), each with ``kind`` and a hover text of its scores."""
        from polycl.catalogue import list_targets

        return [{"name": e.name, "target": e.target, "source": e.source, "kind": e.kind, "scores": e.scores,
                 "tooltip": e.describe(), "available": e.path.is_file()}
                for e in list_targets() if e.kind in ("segmentation", "atlas-based")]

    def loadModel(self, model: str | None, device: str = "auto"):
        """A cached :class:`polycl.inference.LoadedModel` (loaded once per model and device), or for
        ``atlas:<organ>`` a :class:`polycl.atlas.targets.AtlasTarget` (unknown organ: InputError)."""
        from polycl.catalogue import load

        key = (str(model), str(device))
        with self._lock:
            if key not in self._models:
                self._models[key] = load(model, device)  # the one parser of model names
            return self._models[key]

    # ------------------------------------------------------------------ shared checks
    @staticmethod
    def readCT(volumeNode):
        """The node's voxels and geometry as a polycl Volume; raises unless it looks like CT."""
        from polycl.validate import require_ct

        volume = conversions.volumeFromNode(volumeNode)
        require_ct(volume)
        return volume

    @staticmethod
    def requireSegment(segmentationNode, segmentId: str | None, *, writable: bool = False):
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
                       device: str = "auto", samModel: str = "litemedsam", engine: str = "auto",
                       prior: str = "auto") -> JobInput:
        from polycl.segment import DEFAULT_MODE, SegmentOptions

        options = SegmentOptions(mode=mode or DEFAULT_MODE, device=device, sam_model=samModel, engine=engine,
                                 prior=prior, check_ct=False)
        volume = self.readCT(volumeNode)
        if segmentId is not None:
            self.requireSegment(segmentationNode, segmentId, writable=True)
        return JobInput("segment", volume, volumeNode.GetID(), segmentationNode.GetID() if segmentationNode else None,
                        segmentId, options, segmentName=segmentName, overwriteOthers=overwriteOthers, model=model)

    def computeSegment(self, request: JobInput, progress=None, cancel=None) -> Outcome:
        """polycl.segment.run on the request's volume (the same function as ``polycl segment``)."""
        from polycl import segment
        from polycl.checkpoint import sha256_file
        from polycl.errors import InputError

        options = request.options
        if options.mode != "unet":
            self._requireCapability(capabilities.refineCapability(), f"mode '{options.mode}' (SAM)")
        loaded = self.loadModel(request.model, options.device)
        segmenter = None if options.mode == "unet" else self.segmenterFor(request.volume, options.sam_model,
                                                                           options.device)
        result = segment.run(request.volume, loaded, options, progress=progress, cancel=cancel, segmenter=segmenter)
        target = loaded.target or "organ"
        if not result.mask.any():
            raise InputError(f"the model '{loaded.entry.name}' found no {target} in '{request.volume.source}'; "
                             "nothing was changed")
        from polycl.atlas.targets import AtlasTarget

        atlasOnly = isinstance(loaded, AtlasTarget)  # an atlas-based target: no network, no weights
        coarse = "atlas prior" if atlasOnly else "polycl U-Net"
        method = {"unet": coarse, "refine": f"{coarse} + SAM refinement ({options.sam_model})",
                  "pipeline": f"{coarse} + SAM ({options.sam_model}) reference slices + propagation"}
        entry = loaded.entry
        provenance = {"Operation": "segment", "Model": entry.name, "Target": loaded.target,
                      "Device": str(loaded.device), "Mode": result.mode, "Method": method[result.mode],
                      "Prompts": "none (automatic)", "Stats": result.summary()}
        if not atlasOnly:
            provenance["ModelSHA256"] = entry.sha256 or sha256_file(entry.path)
        if result.sources:  # which objects came from the U-Net, the atlas prior or both
            from polycl.atlas.targets import sources_text

            provenance["Sources"] = sources_text(result.sources)
        if result.mode == "pipeline":
            provenance["PropagationEngine"] = str(result.engine)
        term = terminology.termFor(loaded.target)
        return Outcome(request, np.asarray(result.mask, np.uint8), request.segmentName or target, provenance,
                       term.color if term else None, message=result.summary(),
                       terminology=term.terminology if term else None)

    def segment(self, volumeNode, segmentationNode=None, model: str | None = None, mode: str | None = None, *,
                progress=None, cancel=None, **kwargs) -> str:
        """Segment ``volumeNode`` (CT) with ``model`` and write the result; returns the segment ID.

        ``mode``: "pipeline" (default: U-Net, SAM-refined reference slice per component, propagation
        with ``engine``, fusion), "refine" (U-Net + SAM box refinement) or "unet" (see
        :mod:`polycl.segment`). ``segmentationNode`` None creates one. ``segmentId`` None adds a new
        segment (named after the target), otherwise that segment is replaced (never when locked).
        Other keywords: those of :meth:`prepareSegment`. Bad input raises
        :class:`polycl.errors.PolyCLError` before anything changes.
        """
        request = self.prepareSegment(volumeNode, segmentationNode, model=model, mode=mode, **kwargs)
        return self.applyOutcome(self.computeSegment(request, progress, cancel))

    # ------------------------------------------------------------------ refine
    def prepareRefine(self, volumeNode, segmentationNode, segmentId: str | None = None, *, roiNodes=None,
                      samModel: str = "litemedsam", device: str = "auto", newSegment: bool = False,
                      overwriteOthers: bool = False) -> JobInput:
        from polycl.errors import InputError
        from polycl.refine import RefineOptions

        options = RefineOptions(sam_model=samModel, device=device, check_ct=False)
        volume = self.readCT(volumeNode)
        if segmentationNode is None:
            raise InputError("no segmentation selected")
        coarse, name = None, None
        if segmentId is not None:
            name = self.requireSegment(segmentationNode, segmentId).GetName()
            coarse = conversions.segmentArray(segmentationNode, segmentId, volumeNode)
            if not coarse.any() and not roiNodes:
                raise InputError(f"segment '{name}' is empty: there is nothing to refine (or draw ROI boxes)")
            coarse = coarse if coarse.any() else None
        # one box per ROI and slice: two ROIs on a slice (two kidneys) stay two prompts
        boxes = sorted((k, *box) for roi in roiNodes or () for k, box in prompts.roiSliceBoxes(roi, volumeNode).items())
        if coarse is None and not boxes:
            raise InputError("select the segment to refine, or draw ROI boxes")
        target = None if newSegment or segmentId is None else segmentId
        if target is not None:
            self.requireSegment(segmentationNode, target, writable=True)
        note = f"{len(boxes)} drawn box(es) (" + ", ".join(r.GetName() for r in roiNodes) + ")" if boxes else ""
        if coarse is not None:
            note = (note + " + " if note else "") + "automatic boxes from the mask"
        return JobInput("refine", volume, volumeNode.GetID(), segmentationNode.GetID(), target, options,
                        segmentName=(name + (" refined" if target is None else "")) if name else None,
                        overwriteOthers=overwriteOthers, mask=coarse, boxes=boxes or None, promptNote=note)

    def computeRefine(self, request: JobInput, progress=None, cancel=None) -> Outcome:
        """polycl.refine.run on the request's volume (the same function as ``polycl refine``)."""
        from polycl import refine
        from polycl.errors import InputError

        self._requireCapability(capabilities.refineCapability(), "refinement")
        o = request.options
        result = refine.run(request.volume, request.mask, o, boxes=request.boxes, progress=progress, cancel=cancel,
                            segmenter=self.segmenterFor(request.volume, o.sam_model, o.device))
        mask = np.asarray(result.mask, dtype=np.uint8)
        if not mask.any():
            raise InputError("SAM returned an empty mask; nothing was changed")
        return Outcome(request, mask, request.segmentName or "SAM",
                       {"Operation": "refine", "Method": "SAM box refinement", "SamModel": o.sam_model,
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
                         predictor=None) -> JobInput:
        from polycl.errors import InputError
        from polycl.propagate import PropagateOptions

        start, end = limits if limits else (None, None)
        options = PropagateOptions(engine=engine, stop_after=stopAfter, start=start, end=end, device=device,
                                   check_ct=False)
        volume = self.readCT(volumeNode)
        if segmentationNode is None or segmentId is None:
            raise InputError("select the segment that holds the annotated slice")
        segment = self.requireSegment(segmentationNode, segmentId)
        z = volume.shape[0]
        if not 0 <= int(sliceIndex) < z:
            raise InputError(f"slice {sliceIndex} is outside the volume (0..{z - 1})")
        seed = conversions.segmentArray(segmentationNode, segmentId, volumeNode)
        if not seed[int(sliceIndex)].any():
            raise InputError(f"segment '{segment.GetName()}' is empty on slice {sliceIndex}: annotate that slice "
                             "first (or move the red view to an annotated slice)")
        target = None if newSegment else segmentId
        if target is not None:
            self.requireSegment(segmentationNode, target, writable=True)
        return JobInput("propagate", volume, volumeNode.GetID(), segmentationNode.GetID(), target, options,
                        segmentName=segment.GetName() + (" propagated" if newSegment else ""),
                        overwriteOthers=overwriteOthers, mask=seed, sliceIndex=int(sliceIndex), predictor=predictor)

    def computePropagate(self, request: JobInput, progress=None, cancel=None) -> Outcome:
        """polycl.propagate.run from the request's slice (the same function as ``polycl propagate``);
        the annotated slice is kept exactly as drawn."""
        from polycl import propagate

        o = request.options
        if request.predictor is None or o.engine == "chain":  # a ready SAM 2 predictor needs no weights check
            self._requireCapability(capabilities.propagateCapability(o.engine), f"propagation ({o.engine})")
        # the chain engine reuses this CT's embeddings from Segment/Refine (SAM 2 has its own)
        segmenter = self.segmenterFor(request.volume, device=o.device) if capabilities.refineCapability() else None
        result = propagate.run(request.volume, request.mask, o, seed_slices=[request.sliceIndex], progress=progress,
                               cancel=cancel, predictor=request.predictor, segmenter=segmenter)
        objects = result.describe_objects()
        provenance = {"Operation": "propagate", "Method": "propagation from one annotated slice",
                      "PropagationEngine": f"{result.engine.name} ({result.engine.detail})",
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
        import slicer
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

    def saveUndoState(self, segmentationNode) -> None:
        """Keep the segmentation as it is now as one undo step (before a change that is not an Outcome)."""
        self.history.saveState(segmentationNode)

    @property
    def undoStates(self) -> int:
        """How many undo steps are kept per segmentation."""
        return self.history.maximumStates

    def writeSlices(self, segmentationNode, volumeNode, segmentId: str, slab, first: int, provenance: dict) -> None:
        """Write ``slab`` (uint8 (n, y, x)) as slices ``first``.. of a segment, as one undo step."""
        segmentedit.writeSlices(segmentationNode, volumeNode, segmentId, slab, first, provenance=provenance,
                                history=self.history)

    # ------------------------------------------------------------------ batch and fine-tuning
    def segmentFolder(self, inputDir, outputDir, *, model: str | None = None, device: str = "auto",
                      mode: str | None = None, overwrite: bool = False, inProcess: bool = True,
                      prior: str = "auto", progress=printLine, cancel=None):
        """Segment every CT of ``inputDir`` into ``outputDir/<case>.nii.gz`` (input geometry; resumable:
        finished cases are skipped; ``report.csv`` lists outcomes, with the mode and engine that ran).
        ``mode`` and ``prior`` as in :meth:`segment`; ``progress(cases_done, cases, report_line)`` (default: print).

        ``inProcess`` (the console default) runs here and returns the list of outcomes; otherwise a
        ``polycl segment`` subprocess is started and its :class:`~PolyCLSegmentLib.jobs.process.CoreProcess`
        returned (the panel polls it)."""
        from polycl import segment
        from polycl.errors import InputError
        from polycl.segment import DEFAULT_MODE, SegmentOptions

        options = SegmentOptions(mode=mode or DEFAULT_MODE, device=device, prior=prior)
        if not Path(inputDir).is_dir():
            raise InputError(f"{inputDir}: not a folder")
        if Path(outputDir).resolve() == Path(inputDir).resolve():
            raise InputError("the output folder must differ from the input folder")
        if not inProcess:
            from PolyCLSegmentLib.jobs.process import CoreProcess, coreCommand

            args = ["segment", str(inputDir), "-o", str(outputDir), "--device", device, "--mode", options.mode,
                    "--prior", prior, "--progress-json"]
            args += (["--model", str(model)] if model else []) + (["--overwrite"] if overwrite else [])
            return CoreProcess(coreCommand(*args))
        from polycl.batch import run_batch
        from polycl.io import read_volume, write_mask_like

        loaded = self.loadModel(model, device)

        def process(case, out: Path) -> str:
            volume = read_volume(case.image)
            result = segment.run(volume, loaded, options, cancel=cancel)
            write_mask_like(result.mask, volume, out)
            return result.report_line()

        return run_batch(inputDir, outputDir, process, overwrite=overwrite, progress=progress, cancel=cancel)

    def finetune(self, folder, name: str, *, target: str = "liver", epochs: int = 30, labelFraction: float = 1.0,
                 device: str = "auto", encoder: str | None = None, resume: bool = False, extraArgs=()):
        """Start ``polycl finetune`` on ``folder`` in a subprocess; returns its CoreProcess (``.poll()``,
        ``.fraction``, ``.message``, ``.cancel()``, ``.wait()``). The model is installed as user model
        ``name`` and appears in :meth:`listModels` when the process ends successfully. The folder's
        cases are checked by ``polycl finetune`` itself (one place); here only what the command line needs."""
        from polycl.errors import InputError
        from polycl.models import check_model_name

        from PolyCLSegmentLib.jobs.process import CoreProcess, coreCommand

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
