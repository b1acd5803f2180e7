"""Save: the segmentation beside the CT in the data folder, with Slicer's own writers.

Three files, each written to a ``.polycl.partial.`` name first and renamed when complete (a full disk
leaves no half-written file under the final name):

* ``<stem>.polycl.seg.nrrd``: the Segmentation node (``vtkMRMLSegmentationStorageNode``);
* ``<stem>.polycl.labels.nii.gz``: a label volume on the CT's grid, segment i (in the segmentation's
  order) has label i + 1 (Segmentations logic ``ExportSegmentsToLabelmapNode``; where segments overlap
  the later one wins), written by ``vtkMRMLVolumeArchetypeStorageNode``; all zeros without segments
  (Volumes logic ``CreateAndAddLabelVolume``);
* ``<stem>.polycl.labels.json``: {"image", "labels": {value: {"name", "segmentId"}}};
* ``<stem>.polycl.<segment>.overlay.png`` for every segment that is not empty: the segment over the CT
  (axial, coronal and sagittal slices through its centre), the picture ``polycl demo`` draws
  (the controller's ``overlayPicture``, written atomically).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def _partial(path: Path) -> Path:
    return path.with_name(path.name.replace(".polycl.", ".polycl.partial."))


def _exportLabels(segmentationNode, volumeNode, segmentIds, path: Path) -> None:
    import slicer
    import vtk

    scene = slicer.mrmlScene
    labelNode = slicer.modules.volumes.logic().CreateAndAddLabelVolume(scene, volumeNode, "polycl-save")
    try:
        if segmentIds:
            ids = vtk.vtkStringArray()
            for segId in segmentIds:
                ids.InsertNextValue(segId)
            if not slicer.modules.segmentations.logic().ExportSegmentsToLabelmapNode(
                    segmentationNode, ids, labelNode, volumeNode):
                raise RuntimeError("the segments could not be exported as labels")
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(True)
        if not storage.WriteData(labelNode):
            raise RuntimeError(f"could not write {path.name}")
    finally:
        for node in (labelNode.GetDisplayNode(), labelNode):
            if node is not None and scene.IsNodePresent(node):
                scene.RemoveNode(node)


def _pictureName(name: str) -> str:
    """A segment name as part of a file name: letters, digits, '-' and '_' only."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name.strip())
    return safe.strip("_") or "segment"


def save(data, entry, segmentationNode, volumeNode, controller=None) -> list[Path]:
    """Write the files for the data folder's ``entry`` (with ``controller``, the overlay pictures too);
    returns their paths."""
    import slicer

    from PolyCLSegmentLib import segmentedit

    if segmentationNode is None or volumeNode is None:
        raise RuntimeError("load a CT first")
    segPath, labelsPath, namesPath = (data.outputPath(entry, s) for s in (".seg.nrrd", ".labels.nii.gz", ".labels.json"))
    ids = segmentedit.segmentIds(segmentationNode)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(_partial(segPath)))
    if not storage.WriteData(segmentationNode):
        raise RuntimeError(f"could not write {segPath.name}")
    _exportLabels(segmentationNode, volumeNode, ids, _partial(labelsPath))
    segmentation = segmentationNode.GetSegmentation()
    names = {i + 1: {"name": segmentation.GetSegment(segId).GetName(), "segmentId": segId} for i, segId in enumerate(ids)}
    _partial(namesPath).write_text(json.dumps({"image": entry.name, "labels": names}, indent=1))
    for p in (segPath, labelsPath, namesPath):
        os.replace(_partial(p), p)
    written = [segPath, labelsPath, namesPath]
    if controller is not None:
        used = set()
        for segId in ids:
            name = _pictureName(segmentation.GetSegment(segId).GetName())
            while name in used:
                name += "_"
            used.add(name)
            picture = controller.overlayPicture(volumeNode, segmentationNode, segId,
                                                data.outputPath(entry, f".{name}.overlay.png"))
            if picture is not None:  # (an empty segment has none)
                written.append(picture)
    return written
