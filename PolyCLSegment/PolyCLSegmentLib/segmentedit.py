"""Writing a finished result into a segmentation without losing anything the user made.

Rules (the same for Segment, Refine and Propagate):

* the result is computed completely first; the segmentation is touched only by
  :func:`applyMask`, in one step;
* the segmentation's undo state is saved before that step (:class:`UndoHistory`, one
  ``vtkSegmentationHistory`` per segmentation node, as Slicer's Segment Editor keeps);
* **locked** segments are never changed: a segment is locked when its tag ``PolyCL.Locked`` is
  ``1``/``true`` or when its status (the Segment Editor's status column,
  tag ``Segmentation.Status``) is *Completed*. Asking to replace a locked segment raises before
  anything changes;
* ``overwriteOthers`` decides, as the Segment Editor's "Modify other segments: overwrite all"
  does, whether the new mask is removed from the other (unlocked) segments; when it is on, the
  voxels of locked segments are also taken out of the new mask, so they keep their voxels. When it
  is off the new segment may overlap others and nothing else changes;
* the segment gets provenance tags (``PolyCL.*``: operation, model name and SHA-256, prompts,
  engine, time).
"""

from __future__ import annotations

import datetime
import json

import numpy as np

from PolyCLSegmentLib import conversions

LOCK_TAG = "PolyCL.Locked"
TAG_PREFIX = "PolyCL."
#: Provenance tags written by :func:`applyMask` (each ``PolyCL.<key>``).
#: ``Method``: what ran (e.g. "polycl U-Net + SAM refinement (litemedsam)"); ``PropagationEngine``:
#: the propagation engine that carried the mask (chain or sam2, with its detail); ``SamModel``: the SAM
#: model that answered boxes or prompts.
PROVENANCE_KEYS = ("Operation", "Model", "ModelSHA256", "Target", "Mode", "Method", "PropagationEngine", "SamModel",
                   "Prompts", "Device", "LowConfidenceSlices", "Objects", "Sources", "Stats", "Time", "Version")


def segmentTag(segment, name: str) -> str | None:
    """A segment's tag value, or None when absent."""
    import vtk

    value = vtk.reference("")
    return str(value) if segment.GetTag(name, value) else None


def isSegmentLocked(segment) -> bool:
    import slicer

    if (segmentTag(segment, LOCK_TAG) or "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    return logic.GetSegmentStatus(segment) == logic.Completed


def setSegmentLocked(segment, locked: bool = True) -> None:
    segment.SetTag(LOCK_TAG, "1" if locked else "0")


def segmentIds(segmentationNode) -> list[str]:
    s = segmentationNode.GetSegmentation()
    return [s.GetNthSegmentID(i) for i in range(s.GetNumberOfSegments())]


def contentStamp(segmentationNode) -> str | None:
    """A fingerprint of the segments' names and voxels (None: no segmentation or no segment): two
    equal stamps mean nothing was drawn, edited, added or removed in between, whatever did it."""
    import hashlib

    from vtk.util.numpy_support import vtk_to_numpy

    ids = segmentIds(segmentationNode) if segmentationNode is not None else []
    if not ids:
        return None
    segmentation = segmentationNode.GetSegmentation()
    digest = hashlib.sha1()
    for segId in ids:
        segment = segmentation.GetSegment(segId)
        digest.update(f"{segId}|{segment.GetName()}|{segment.GetLabelValue()}|".encode())
        image = segment.GetRepresentation(segmentation.GetSourceRepresentationName())
        scalars = image.GetPointData().GetScalars() if image is not None else None
        if scalars is not None:
            digest.update(str(image.GetExtent()).encode())
            digest.update(vtk_to_numpy(scalars).tobytes())
    return digest.hexdigest()


def lockedSegmentIds(segmentationNode) -> list[str]:
    s = segmentationNode.GetSegmentation()
    return [sid for sid in segmentIds(segmentationNode) if isSegmentLocked(s.GetSegment(sid))]


class UndoHistory:
    """Undo states of segmentations, one ``vtkSegmentationHistory`` per segmentation node: the
    Segment Editor's own mechanism, and the only one of this module (Segment, Refine, Propagate and
    every prompt save one state each). :meth:`useHistory` adopts a history a front end already has
    (the editor's), so that one undo stack serves both."""

    def __init__(self, maximumStates: int = 10):
        self.maximumStates = maximumStates
        self._histories: dict[str, object] = {}

    def _history(self, segmentationNode):
        import slicer

        key = segmentationNode.GetID()
        history = self._histories.get(key)
        if history is None:
            history = slicer.vtkSegmentationHistory()
            history.SetMaximumNumberOfStates(self.maximumStates)
            history.SetSegmentation(segmentationNode.GetSegmentation())
            self._histories[key] = history
        return history

    def useHistory(self, segmentationNode, history) -> None:
        """Use ``history`` (a ``vtkSegmentationHistory`` on this node's segmentation) for this node."""
        history.SetSegmentation(segmentationNode.GetSegmentation())
        self._histories[segmentationNode.GetID()] = history

    def saveState(self, segmentationNode) -> None:
        self._history(segmentationNode).SaveState()

    def canUndo(self, segmentationNode) -> bool:
        key = segmentationNode.GetID() if segmentationNode is not None else None
        return key in self._histories and self._histories[key].IsRestorePreviousStateAvailable()

    def undo(self, segmentationNode) -> bool:
        """Restore the state saved before the last change; False when there is none."""
        if not self.canUndo(segmentationNode):
            return False
        ok = bool(self._histories[segmentationNode.GetID()].RestorePreviousState())
        segmentationNode.Modified()
        return ok


def _setTags(segment, provenance: dict) -> None:
    tags = {"Time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    tags.update(provenance or {})
    for key, value in tags.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        segment.SetTag(key if key.startswith(TAG_PREFIX) else TAG_PREFIX + key, text)


def applyMask(segmentationNode, volumeNode, mask: np.ndarray, *, segmentId: str | None = None,
              segmentName: str = "PolyCL", color: tuple[float, float, float] | None = None,
              overwriteOthers: bool = False, provenance: dict | None = None,
              history: UndoHistory | None = None, terminology: str | None = None) -> str:
    """Write a finished (z, y, x) mask (on ``volumeNode``'s grid) into ``segmentationNode``.

    ``segmentId`` None adds a new segment named ``segmentName``; otherwise that segment's content
    is replaced. Returns the segment's ID. Raises (changing nothing) when the target is locked or
    the mask does not fit the volume. ``terminology`` (a Slicer terminology string, see
    :func:`PolyCLSegmentLib.terminology.termFor`) is set on a new segment; a replaced segment keeps its own.
    """
    import slicer

    from polycl.errors import InputError

    mask = np.asarray(mask)
    dims = volumeNode.GetImageData().GetDimensions()
    if mask.shape != tuple(dims[::-1]):
        raise InputError(f"mask shape {mask.shape} does not match the volume's (z, y, x) {tuple(dims[::-1])}")
    segmentation = segmentationNode.GetSegmentation()
    if segmentId is not None:
        target = segmentation.GetSegment(segmentId)
        if target is None:
            raise InputError(f"segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}'")
        if isSegmentLocked(target):
            raise InputError(f"segment '{target.GetName()}' is locked (tag {LOCK_TAG} or status Completed); "
                             "unlock it or write the result to a new segment")
    mask = (mask > 0).astype(np.uint8)
    locked = [sid for sid in lockedSegmentIds(segmentationNode) if sid != segmentId]
    overwrite: list[str] = []
    if overwriteOthers:
        for sid in locked:  # keep locked segments' voxels out of the new mask
            mask[conversions.segmentArray(segmentationNode, sid, volumeNode) > 0] = 0
        overwrite = [sid for sid in segmentIds(segmentationNode) if sid != segmentId and sid not in locked]

    if history is not None:
        history.saveState(segmentationNode)
    wasModifying = segmentationNode.StartModify()
    try:
        if not segmentationNode.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) \
                and segmentation.GetNumberOfSegments() == 0:
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        created = segmentId is None
        if segmentId is None:
            if color is not None:
                segmentId = segmentation.AddEmptySegment("", segmentName, list(color))
            else:
                segmentId = segmentation.AddEmptySegment("", segmentName)
        image = conversions.orientedImageFromMask(mask, conversions.ijkToRasArray(volumeNode))
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, logic.MODE_REPLACE,
                                                image.GetExtent(), False, overwrite):
            raise RuntimeError(f"Slicer could not write the mask into segment '{segmentId}'")
        segment = segmentation.GetSegment(segmentId)
        _setTags(segment, provenance or {})
        if terminology and created:  # a replaced segment keeps the terminology its user gave it
            segment.SetTag(segment.GetTerminologyEntryTagName(), terminology)
    finally:
        segmentationNode.EndModify(wasModifying)
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    return segmentId


def writeSlices(segmentationNode, volumeNode, segmentId: str, slab: np.ndarray, firstSlice: int, *,
                provenance: dict | None = None, history: UndoHistory | None = None) -> None:
    """Replace slices ``firstSlice .. firstSlice + len(slab) - 1`` of one segment with ``slab``
    ((n, y, x) on ``volumeNode``'s grid); the rest of the segment and every other segment stay as
    they are. Raises (changing nothing) when the segment is missing or locked. Used for prompt
    answers: one undo state per call."""
    import slicer

    from polycl.errors import InputError

    slab = np.asarray(slab)
    dims = volumeNode.GetImageData().GetDimensions()
    if slab.ndim != 3 or slab.shape[1:] != (dims[1], dims[0]) or not 0 <= firstSlice <= dims[2] - len(slab):
        raise InputError(f"slices {firstSlice}..{firstSlice + len(slab) - 1} of shape {slab.shape[1:]} do not fit "
                         f"the volume's (z, y, x) {tuple(dims[::-1])}")
    segment = segmentationNode.GetSegmentation().GetSegment(segmentId)
    if segment is None:
        raise InputError(f"segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}'")
    if isSegmentLocked(segment):
        raise InputError(f"segment '{segment.GetName()}' is locked; unlock it to edit it with prompts")
    if history is not None:
        history.saveState(segmentationNode)
    image = conversions.orientedImageFromMask(slab, conversions.ijkToRasArray(volumeNode), firstSlice=firstSlice)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    wasModifying = segmentationNode.StartModify()
    try:
        # MODE_REPLACE replaces the whole segment; MIN then MAX with the slab replace exactly its slices
        # (current AND slab, then OR slab) and leave every voxel outside the slab's extent as it was
        for mode in (logic.MODE_MERGE_MIN, logic.MODE_MERGE_MAX):
            if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, mode, image.GetExtent(),
                                                    False, []):
                raise RuntimeError(f"Slicer could not write slices into segment '{segmentId}'")
        _setTags(segment, provenance or {})
    finally:
        segmentationNode.EndModify(wasModifying)
