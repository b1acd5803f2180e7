"""The one place where MRML nodes and polycl's arrays + geometry meet.

Conventions on both sides:

* MRML: a volume's voxel (i, j, k) lies at ``IJKToRAS @ (i, j, k, 1)`` in RAS mm;
  ``slicer.util.arrayFromVolume`` gives the voxels as a (k, j, i) = (z, y, x) numpy array.
* polycl: :class:`polycl.volume.Geometry` is ITK's (spacing, origin, direction) in LPS mm for the
  same (z, y, x) array, so ``index_to_lps() == diag(-1, -1, 1, 1) @ IJKToRAS``.

The conversion is therefore a sign flip of the first two rows, exact for any IJK-to-RAS matrix
(LPS or RAS files, flipped axes, oblique directions); arrays are never reordered or resampled.
Masks go into segments as ``vtkOrientedImageData`` on the volume's own grid, so a segment made on
a volume lies voxel for voxel on that volume.
"""

from __future__ import annotations

import numpy as np

#: RAS <-> LPS (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ijkToRasArray(volumeNode) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix as a numpy array (mm)."""
    import slicer
    import vtk

    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


def rasToIjk(volumeNode, ras) -> np.ndarray:
    """Continuous IJK (i, j, k) of RAS points ``ras`` (3,) or (n, 3) on the volume's grid."""
    points = np.atleast_2d(np.asarray(ras, dtype=float))[:, :3]
    homogeneous = np.c_[points, np.ones(len(points))]
    ijk = (np.linalg.inv(ijkToRasArray(volumeNode)) @ homogeneous.T).T[:, :3]
    return ijk[0] if np.ndim(ras) == 1 else ijk


def geometryFromIjkToRas(ijkToRas: np.ndarray):
    """polycl Geometry (LPS, ITK conventions) of a grid with this IJK-to-RAS matrix."""
    from polycl.volume import Geometry

    return Geometry.from_index_to_lps(RAS_TO_LPS @ np.asarray(ijkToRas, dtype=float))


def ijkToRasFromGeometry(geometry) -> np.ndarray:
    """Inverse of :func:`geometryFromIjkToRas`."""
    return RAS_TO_LPS @ geometry.index_to_lps()


def requireScalarVolume(volumeNode, what: str = "input volume"):
    """Raise polycl's InputError unless ``volumeNode`` is a 3D scalar volume with voxels."""
    from polycl.errors import InputError

    if volumeNode is None:
        raise InputError(f"no {what} selected: choose a CT volume first")
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{what} '{volumeNode.GetName()}' is a {volumeNode.GetClassName()}, not a scalar (CT) volume")
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"{what} '{volumeNode.GetName()}' is a label map, not a CT image")
    image = volumeNode.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"{what} '{volumeNode.GetName()}' has no voxels")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"{what} '{volumeNode.GetName()}' has {image.GetNumberOfScalarComponents()} components per voxel")
    if volumeNode.GetParentTransformNode() is not None:
        raise InputError(f"{what} '{volumeNode.GetName()}' is under a transform: harden the transform first "
                         "(Data module, right-click > Harden transform)")


def volumeFromNode(volumeNode):
    """A :class:`polycl.volume.Volume` (copied (z, y, x) array, LPS geometry) of a scalar volume node."""
    import slicer
    from polycl.volume import Volume

    requireScalarVolume(volumeNode)
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    return Volume(array, geometryFromIjkToRas(ijkToRasArray(volumeNode)), source=volumeNode.GetName())


def orientedImageFromMask(mask: np.ndarray, ijkToRas: np.ndarray, firstSlice: int = 0):
    """A ``vtkOrientedImageData`` (uint8 0/1) holding a (z, y, x) mask on the grid ``ijkToRas``;
    ``firstSlice``: the IJK k of the mask's first slice (a slab of the grid: its extent starts there)."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    mask = np.ascontiguousarray(np.asarray(mask) > 0, dtype=np.uint8)
    z, y, x = mask.shape
    image = slicer.vtkOrientedImageData()
    image.SetExtent(0, x - 1, 0, y - 1, int(firstSlice), int(firstSlice) + z - 1)
    image.SetOrigin(0.0, 0.0, 0.0)
    image.SetSpacing(1.0, 1.0, 1.0)
    scalars = numpy_support.numpy_to_vtk(mask.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijkToRas, float)))
    return image


def voxelAtRas(volumeNode, ras) -> tuple[int, int, int]:
    """The (z, y, x) voxel (array indices of slicer.util.arrayFromVolume) containing a RAS point (mm);
    raises InputError outside the volume."""
    from polycl.errors import InputError

    i, j, k = np.round(rasToIjk(volumeNode, ras)).astype(int)
    dims = volumeNode.GetImageData().GetDimensions()
    if not (0 <= i < dims[0] and 0 <= j < dims[1] and 0 <= k < dims[2]):
        raise InputError(f"the point {tuple(np.round(ras, 1))} (RAS mm) is outside '{volumeNode.GetName()}'")
    return int(k), int(j), int(i)


def segmentArray(segmentationNode, segmentId: str, volumeNode) -> np.ndarray:
    """The segment as a uint8 (z, y, x) 0/1 mask on ``volumeNode``'s grid
    (``slicer.util.arrayFromSegmentBinaryLabelmap``; reads only)."""
    import slicer

    from polycl.errors import InputError

    if segmentationNode is None or segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        name = segmentationNode.GetName() if segmentationNode is not None else "(none)"
        raise InputError(f"segmentation '{name}' has no segment '{segmentId}'")
    scene = slicer.mrmlScene
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    try:
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
    finally:  # the export's temporary labelmap can leave its display node (and a display node of the
        # segmentation) behind where no Colors module runs: a read leaves the scene as it was
        added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        for node in [n for n in added if n.GetID() not in before]:
            scene.RemoveNode(node)
    return (array > 0).astype(np.uint8)
