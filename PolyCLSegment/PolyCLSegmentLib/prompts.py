"""User prompts drawn in Slicer turned into arrays on a volume's grid.

* ROI markups (``vtkMRMLMarkupsROINode``, possibly rotated) -> a (z, y, x) box mask on the volume's
  grid: the voxels whose centres lie inside the ROI. SAM's per-slice boxes are then the bounding
  boxes of that mask on each axial slice.
* A slice view's position -> the volume's IJK slice index k under it.
"""

from __future__ import annotations

import numpy as np

from PolyCLSegmentLib import conversions


def roiMask(roiNode, volumeNode) -> np.ndarray:
    """uint8 (z, y, x) mask of the volume's voxels inside ``roiNode`` (RAS, any rotation)."""
    from polycl.errors import InputError

    if roiNode is None or not roiNode.IsA("vtkMRMLMarkupsROINode"):
        raise InputError("a box prompt must be an ROI markup (vtkMRMLMarkupsROINode)")
    size = list(roiNode.GetSize())  # along the ROI's own axes (mm)
    if min(size) <= 0:
        raise InputError(f"ROI '{roiNode.GetName()}' has zero size; draw a box around the organ")
    objectToWorld = roiNode.GetObjectToWorldMatrix()  # ROI axes -> RAS (rotation, translation)
    o2w = np.array([[objectToWorld.GetElement(r, c) for c in range(4)] for r in range(4)])
    worldToObject = np.linalg.inv(o2w)
    dims = volumeNode.GetImageData().GetDimensions()  # (i, j, k) sizes
    ijkToRas = conversions.ijkToRasArray(volumeNode)
    ijkToObject = worldToObject @ ijkToRas
    k, j, i = np.meshgrid(np.arange(dims[2]), np.arange(dims[1]), np.arange(dims[0]), indexing="ij")
    pts = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)]).astype(np.float64)
    obj = (ijkToObject @ pts)[:3]
    half = np.asarray(size)[:, None] / 2.0
    inside = np.all(np.abs(obj) <= half + 1e-6, axis=0)
    mask = inside.reshape(dims[2], dims[1], dims[0]).astype(np.uint8)
    if not mask.any():
        raise InputError(f"ROI '{roiNode.GetName()}' does not cover any voxel of '{volumeNode.GetName()}'")
    return mask


def sliceBoxes(mask_zyx: np.ndarray) -> dict[int, tuple[int, int, int, int]]:
    """Per slice k with any voxel: its bounding box (x0, y0, x1, y1), inclusive pixel indices."""
    boxes = {}
    for k in np.flatnonzero(mask_zyx.reshape(mask_zyx.shape[0], -1).any(axis=1)):
        ys, xs = np.nonzero(mask_zyx[k])
        boxes[int(k)] = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return boxes


def sliceIndexAtRas(volumeNode, ras) -> int:
    """The volume's IJK k of the slice containing the RAS point (rounded, clipped to the volume)."""
    rasToIjk = np.linalg.inv(conversions.ijkToRasArray(volumeNode))
    ijk = rasToIjk @ np.array([ras[0], ras[1], ras[2], 1.0])
    dims = volumeNode.GetImageData().GetDimensions()
    return int(np.clip(np.round(ijk[2]), 0, dims[2] - 1))
