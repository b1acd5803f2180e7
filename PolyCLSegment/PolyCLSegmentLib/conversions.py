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
    import vtk

    m = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(m)
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def vtkMatrixFromArray(array: np.ndarray):
    import vtk

    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


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


def updateVolumeNodeFromVolume(volumeNode, volume) -> None:
    """Set a volume node's voxels and IJK-to-RAS matrix from a polycl Volume."""
    import slicer

    slicer.util.updateVolumeFromArray(volumeNode, np.ascontiguousarray(volume.array))
    volumeNode.SetIJKToRASMatrix(vtkMatrixFromArray(ijkToRasFromGeometry(volume.geometry)))


def addVolumeNode(volume, name: str = "", labelmap: bool = False):
    """A new scalar (or label map) volume node holding ``volume``."""
    import slicer

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode",
                                              name or volume.source or "volume")
    updateVolumeNodeFromVolume(node, volume)
    node.CreateDefaultDisplayNodes()
    return node


def orientedImageFromMask(mask: np.ndarray, ijkToRas: np.ndarray):
    """A ``vtkOrientedImageData`` (uint8 0/1) holding a (z, y, x) mask on the grid ``ijkToRas``."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    mask = np.ascontiguousarray(np.asarray(mask) > 0, dtype=np.uint8)
    z, y, x = mask.shape
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(x, y, z)
    image.SetOrigin(0.0, 0.0, 0.0)
    image.SetSpacing(1.0, 1.0, 1.0)
    scalars = numpy_support.numpy_to_vtk(mask.ravel(), deep=True, array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    image.SetImageToWorldMatrix(vtkMatrixFromArray(ijkToRas))
    return image


def referenceImageForVolume(volumeNode):
    """An empty ``vtkOrientedImageData`` with the volume's grid (extent and IJK-to-RAS), no voxels."""
    import slicer

    ref = slicer.vtkOrientedImageData()
    dims = volumeNode.GetImageData().GetDimensions()
    ref.SetExtent(0, dims[0] - 1, 0, dims[1] - 1, 0, dims[2] - 1)
    ref.SetImageToWorldMatrix(vtkMatrixFromArray(ijkToRasArray(volumeNode)))
    return ref


def maskFromSegment(segmentationNode, segmentId: str, volumeNode) -> np.ndarray:
    """The segment as a uint8 (z, y, x) 0/1 mask on ``volumeNode``'s grid (nearest resampling when
    the segmentation's geometry differs). Reads only: the segmentation is not modified."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    from polycl.errors import InputError

    segmentation = segmentationNode.GetSegmentation()
    if segmentation.GetSegment(segmentId) is None:
        raise InputError(f"segmentation '{segmentationNode.GetName()}' has no segment '{segmentId}'")
    if not segmentationNode.GetSegmentation().ContainsRepresentation(
            slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()):
        segmentationNode.CreateBinaryLabelmapRepresentation()
    labelmap = slicer.vtkOrientedImageData()
    if not segmentationNode.GetBinaryLabelmapRepresentation(segmentId, labelmap):
        raise InputError(f"segment '{segmentId}' has no binary labelmap representation")
    ref = referenceImageForVolume(volumeNode)
    dims = volumeNode.GetImageData().GetDimensions()
    extent = labelmap.GetExtent()
    if extent[0] > extent[1] or extent[2] > extent[3] or extent[4] > extent[5]:
        return np.zeros(dims[::-1], dtype=np.uint8)
    out = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(labelmap, ref, out, False, True)
    # Pad/crop to exactly the reference extent.
    pad = vtk.vtkImageConstantPad()
    pad.SetInputData(out)
    pad.SetOutputWholeExtent(ref.GetExtent())
    pad.SetConstant(0)
    pad.Update()
    array = numpy_support.vtk_to_numpy(pad.GetOutput().GetPointData().GetScalars()).reshape(dims[::-1])
    return (array > 0).astype(np.uint8)
