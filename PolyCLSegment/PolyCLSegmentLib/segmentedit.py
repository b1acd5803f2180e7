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
PROVENANCE_KEYS = ("Operation", "Model", "ModelSHA256", "Target", "Mode", "Engine", "Refiner", "Prompts", "Device",
                   "LowConfidenceSlices", "Objects", "Stats", "Time", "Version")


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


def lockedSegmentIds(segmentationNode) -> list[str]:
    s = segmentationNode.GetSegmentation()
    return [sid for sid in segmentIds(segmentationNode) if isSegmentLocked(s.GetSegment(sid))]


def provenanceTags(segment) -> dict[str, str]:
    """All ``PolyCL.*`` tags of a segment (as written by :func:`applyMask`)."""
    out = {}
    for key in PROVENANCE_KEYS:
        value = segmentTag(segment, TAG_PREFIX + key)
        if value is not None:
            out[TAG_PREFIX + key] = value
    return out


class UndoHistory:
    """Undo states of segmentations, one ``vtkSegmentationHistory`` per segmentation node."""

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


#: Standard terminology (SNOMED CT codes, DICOM master list) of the organs polycl segments, as
#: Slicer's terminology strings, the way SlicerTotalSegmentator and MONAIAuto3DSeg label their
#: segments: the segment then says what it is in a code any DICOM SEG reader understands.
#: Display colours (r, g, b in 0..1) of new segments by target, as Slicer's terminology shows them.
ORGAN_COLORS = {"liver": (221 / 255, 130 / 255, 101 / 255), "kidney": (185 / 255, 102 / 255, 83 / 255)}
_TERMINOLOGY_CODES = {"liver": ("10200004", "Liver"), "kidney": ("64033007", "Kidney"), "spleen": ("78961009", "Spleen")}


def terminologyFor(target: str | None) -> str | None:
    """Slicer terminology string for a model's target ("liver", "kidney", "spleen" or the label
    value(s) of one, such as "5"), or None when polycl knows no code for it."""
    if not target:
        return None
    name = str(target).strip().lower()
    if name not in _TERMINOLOGY_CODES:
        from polycl.io import TARGET_LABELS, parse_label_spec

        try:
            values = parse_label_spec(name)
        except Exception:  # noqa: BLE001  not a label spec either: no code
            return None
        name = next((n for n, v in TARGET_LABELS.items() if tuple(v) == tuple(values)), "")
        if name not in _TERMINOLOGY_CODES:
            return None
    code, meaning = _TERMINOLOGY_CODES[name]
    return ("Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
            f"~SCT^{code}^{meaning}~^^~Anatomic codes - DICOM master list~^^~^^")


def applyMask(segmentationNode, volumeNode, mask: np.ndarray, *, segmentId: str | None = None,
              segmentName: str = "PolyCL", color: tuple[float, float, float] | None = None,
              overwriteOthers: bool = False, provenance: dict | None = None,
              history: UndoHistory | None = None, terminology: str | None = None) -> str:
    """Write a finished (z, y, x) mask (on ``volumeNode``'s grid) into ``segmentationNode``.

    ``segmentId`` None adds a new segment named ``segmentName``; otherwise that segment's content
    is replaced. Returns the segment's ID. Raises (changing nothing) when the target is locked or
    the mask does not fit the volume. ``terminology`` (a Slicer terminology string, see
    :func:`terminologyFor`) is set on a new segment; a replaced segment keeps its own.
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
            mask[conversions.maskFromSegment(segmentationNode, sid, volumeNode) > 0] = 0
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
