"""Save: the segmentation beside the CT in the data folder, with Slicer's own writers.

Three files, each written to a ``.polycl.partial.`` name first and renamed when complete (a full disk
leaves no half-written file under the final name):

* ``<stem>.polycl.seg.nrrd``: the Segmentation node (``vtkMRMLSegmentationStorageNode``);
* ``<stem>.polycl.labels.nii.gz``: a label volume on the CT's grid, segment i (in the segmentation's
  order) has label i + 1 (Segmentations logic ``ExportSegmentsToLabelmapNode``; where segments overlap
  the later one wins), written by ``vtkMRMLVolumeArchetypeStorageNode``; all zeros without segments
  (Volumes logic ``CreateAndAddLabelVolume``);
* ``<stem>.polycl.labels.json``: {"image", "labels": {value: {"name", "segmentId"}}}.
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


def save(data, entry, segmentationNode, volumeNode) -> list[Path]:
    """Write the three files for the data folder's ``entry``; returns their paths."""
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
    return [segPath, labelsPath, namesPath]
