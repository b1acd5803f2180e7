"""User prompts drawn in Slicer turned into arrays on a volume's grid.

* ROI markups (``vtkMRMLMarkupsROINode``, possibly rotated) -> per axial slice, the bounding box of
  the voxels whose centres lie inside the ROI (SAM's box prompts), computed one slice at a time
  within the ROI's index bounding box.
* A slice view's position -> the volume's IJK slice index k under it.
"""

from __future__ import annotations

import numpy as np

from PolyCLSegmentLib import conversions


def _roiGeometry(roiNode, volumeNode):
    """(ijkToObject 4x4, half sizes (3,), dims (i, j, k), IJK bounding box [(lo, hi)] per axis) of an ROI."""
    import slicer

    from polycl.errors import InputError

    if roiNode is None or not roiNode.IsA("vtkMRMLMarkupsROINode"):
        raise InputError("a box prompt must be an ROI markup (vtkMRMLMarkupsROINode)")
    size = np.asarray(roiNode.GetSize(), dtype=float)  # along the ROI's own axes (mm)
    if size.min() <= 0:
        raise InputError(f"ROI '{roiNode.GetName()}' has zero size; draw a box around the organ")
    objectToWorld = roiNode.GetObjectToWorldMatrix()  # ROI axes -> RAS (rotation, translation)
    o2w = slicer.util.arrayFromVTKMatrix(objectToWorld)
    ijkToRas = conversions.ijkToRasArray(volumeNode)
    ijkToObject = np.linalg.inv(o2w) @ ijkToRas
    dims = volumeNode.GetImageData().GetDimensions()  # (i, j, k) sizes
    # the ROI's 8 corners in IJK bound the voxels worth testing
    half = size / 2.0
    corners = np.array([[sx * half[0], sy * half[1], sz * half[2], 1.0]
                        for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]).T
    ijk = (np.linalg.inv(ijkToObject) @ corners)[:3]
    bounds = [(max(0, int(np.floor(ijk[a].min()))), min(dims[a] - 1, int(np.ceil(ijk[a].max())))) for a in range(3)]
    return ijkToObject, half, dims, bounds


def _roiSlices(roiNode, volumeNode):
    """Yield (k, j0, i0, inside (nj, ni) bool) for the slices the ROI crosses, one slice at a time
    (memory: a few arrays the size of the ROI's footprint on one slice)."""
    ijkToObject, half, dims, bounds = _roiGeometry(roiNode, volumeNode)
    (i0, i1), (j0, j1), (k0, k1) = bounds
    if i0 > i1 or j0 > j1 or k0 > k1:
        return
    jj, ii = np.meshgrid(np.arange(j0, j1 + 1, dtype=np.float64), np.arange(i0, i1 + 1, dtype=np.float64),
                         indexing="ij")
    for k in range(k0, k1 + 1):
        # object coordinates = M[:, 0] i + M[:, 1] j + M[:, 2] k + M[:, 3], axis by axis
        inside = np.ones(ii.shape, bool)
        for a in range(3):
            m = ijkToObject[a]
            inside &= np.abs(m[0] * ii + m[1] * jj + (m[2] * k + m[3])) <= half[a] + 1e-6
        if inside.any():
            yield k, j0, i0, inside


def roiSliceBoxes(roiNode, volumeNode) -> dict[int, tuple[int, int, int, int]]:
    """Per slice k the ROI crosses: the bounding box (x0, y0, x1, y1) of its voxels on that slice,
    without building a volume-sized mask (what SAM's box prompts need)."""
    from polycl.errors import InputError

    boxes = {}
    for k, j0, i0, inside in _roiSlices(roiNode, volumeNode):
        js, is_ = np.nonzero(inside)
        boxes[int(k)] = (int(i0 + is_.min()), int(j0 + js.min()), int(i0 + is_.max()), int(j0 + js.max()))
    if not boxes:
        raise InputError(f"ROI '{roiNode.GetName()}' does not cover any voxel of '{volumeNode.GetName()}'")
    return boxes


def sliceIndexAtRas(volumeNode, ras) -> int:
    """The volume's IJK k of the slice containing the RAS point (rounded, clipped to the volume)."""
    ijk = conversions.rasToIjk(volumeNode, ras[:3])
    dims = volumeNode.GetImageData().GetDimensions()
    return int(np.clip(np.round(ijk[2]), 0, dims[2] - 1))
