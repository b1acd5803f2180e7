"""MRML <-> polycl conversions: exact for any IJK-to-RAS matrix, and consistent with Slicer's readers."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import add_volume_node, load_volume_node


def _oblique_geometry():
    from polycl.volume import Geometry

    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    flip = np.diag([1.0, -1.0, -1.0])  # also flips two axes
    return Geometry((1.5, 2.0, 3.0), (10.0, -20.0, 30.0), tuple((rot @ flip).ravel()))


def test_volume_round_trip_oblique_is_exact(scene):
    from PolyCLSegmentLib import conversions
    from polycl.volume import Volume

    g = _oblique_geometry()
    arr = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7) - 1000
    node = add_volume_node(Volume(arr, g, "obl"))
    back = conversions.volumeFromNode(node)
    assert np.array_equal(back.array, arr)
    assert np.allclose(back.geometry.index_to_lps(), g.index_to_lps(), atol=1e-9)
    # RAS = diag(-1,-1,1) LPS: voxel (i,j,k) = (1,2,3) lands where ITK puts it, with x and y negated
    lps = g.index_to_lps() @ np.array([1, 2, 3, 1.0])
    ras = conversions.ijkToRasArray(node) @ np.array([1, 2, 3, 1.0])
    assert np.allclose(ras[:3], lps[:3] * [-1, -1, 1])


def test_mask_segment_round_trip_oblique_is_exact(scene):
    import slicer

    from PolyCLSegmentLib import conversions, segmentedit
    from polycl.volume import Volume

    g = _oblique_geometry()
    arr = np.zeros((8, 20, 24), np.int16)
    node = add_volume_node(Volume(arr, g, "obl"))
    rng = np.random.default_rng(1)
    mask = (rng.random(arr.shape) > 0.6).astype(np.uint8)
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    sid = segmentedit.applyMask(seg, node, mask, segmentName="random")
    assert np.array_equal(conversions.segmentArray(seg, sid, node), mask)


@pytest.mark.parametrize("flip", [False, True], ids=["file-as-is", "flipped-LPS-copy"])
def test_label_lands_on_slicers_own_reading_of_the_label(scene, ts, tmp_path, flip):
    """A label read by polycl and written into a segment on the CT node overlays the same label read by
    Slicer's NIfTI reader, voxel for voxel in RAS (also when the CT file's axes are flipped)."""
    from PolyCLSegmentLib import conversions, segmentedit
    from polycl.io import read_label

    import slicer

    ct_path = ts / "example_ct_sm.nii.gz"
    if flip:  # same physical image, stored with x and y reversed (direction diag(1, 1, 1): an RAS-like file)
        img = sitk.Flip(sitk.ReadImage(str(ct_path)), [True, True, False])
        ct_path = tmp_path / "flipped.nii.gz"
        sitk.WriteImage(img, str(ct_path))
    ct_node = load_volume_node(ct_path)
    label_path = ts / "example_seg_fast" / "liver.nii.gz"
    label_node = load_volume_node(label_path, labelmap=True)
    label = read_label(label_path)
    ct_volume = conversions.volumeFromNode(ct_node)
    from polycl.io import label_on_image_grid

    on_ct = label_on_image_grid(label, ct_volume).array  # polycl's physical-space placement
    if flip:
        assert not np.array_equal(on_ct, label.array)  # the grids really differ
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    sid = segmentedit.applyMask(seg, ct_node, on_ct, segmentName="liver")
    on_label_grid = conversions.segmentArray(seg, sid, label_node)
    assert np.array_equal(on_label_grid, slicer.util.arrayFromVolume(label_node) > 0)


def _slice_boxes(mask_zyx):
    """Per slice k with any voxel: its bounding box (x0, y0, x1, y1), inclusive."""
    boxes = {}
    for k in np.flatnonzero(mask_zyx.any(axis=(1, 2))):
        ys, xs = np.nonzero(mask_zyx[k])
        boxes[int(k)] = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    return boxes


def test_roi_boxes_and_slice_index(scene):
    import slicer

    from PolyCLSegmentLib import conversions, prompts
    from polycl.volume import Geometry, Volume

    g = Geometry((2.0, 2.0, 5.0), (0.0, 0.0, 0.0))
    node = add_volume_node(Volume(np.zeros((10, 30, 40), np.int16), g, "v"))
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    # RAS centre of voxels i 10..19, j 5..14, k 2..5: RAS x = -2i, y = -2j, z = 5k
    roi.SetCenter(-29.0, -19.0, 17.5)
    roi.SetSize(19.0, 19.0, 19.0)
    boxes = prompts.roiSliceBoxes(roi, node)
    assert sorted(boxes) == [2, 3, 4, 5] and set(boxes.values()) == {(10, 5, 19, 14)}
    assert prompts.sliceIndexAtRas(node, (0, 0, 21.0)) == 4


def test_roi_boxes_of_a_rotated_roi_match_the_full_mask(scene):
    """The slice-by-slice computation against the plain definition (every voxel centre tested)."""
    import slicer
    import vtk

    from PolyCLSegmentLib import conversions, prompts
    from polycl.volume import Geometry, Volume

    g = Geometry((1.5, 1.5, 4.0), (3.0, -2.0, 10.0))
    node = add_volume_node(Volume(np.zeros((12, 40, 50), np.int16), g, "v"))
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetSize(30.0, 18.0, 20.0)
    t = vtk.vtkTransform()
    t.Translate(-40.0, -25.0, 30.0)
    t.RotateZ(30)
    t.RotateX(10)
    roi.GetObjectToNodeMatrix().DeepCopy(t.GetMatrix())
    roi.Modified()
    size = np.array(roi.GetSize())
    o2w = roi.GetObjectToWorldMatrix()
    w2o = np.linalg.inv(np.array([[o2w.GetElement(r, c) for c in range(4)] for r in range(4)]))
    k, j, i = np.meshgrid(np.arange(12), np.arange(40), np.arange(50), indexing="ij")
    pts = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    obj = (w2o @ conversions.ijkToRasArray(node) @ pts)[:3]
    expected = np.all(np.abs(obj) <= size[:, None] / 2 + 1e-6, axis=0).reshape(12, 40, 50)
    assert expected.sum() > 100
    assert prompts.roiSliceBoxes(roi, node) == _slice_boxes(expected)


def test_roi_boxes_of_a_clinical_size_volume_stay_under_20_mb(scene):
    """512 x 512 x 300 (the old every-voxel float64 coordinates needed ~6 GB): box prompts
    are found one slice at a time, so the peak is a few MB."""
    import tracemalloc

    import slicer
    import vtk

    from PolyCLSegmentLib import prompts

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    image = vtk.vtkImageData()
    image.SetDimensions(512, 512, 300)  # geometry only: no voxel buffer is needed for an ROI
    node.SetAndObserveImageData(image)
    node.SetSpacing(0.7, 0.7, 1.0)
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(180.0, 180.0, 150.0)  # RAS = (0.7 i, 0.7 j, k): identity directions
    roi.SetSize(200.0, 150.0, 250.0)
    tracemalloc.start()
    try:
        boxes = prompts.roiSliceBoxes(roi, node)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(boxes) == 251 and boxes[150] == (115, 150, 400, 364), (len(boxes), boxes.get(150))
    assert peak < 20 * 2**20, peak / 2**20


def test_write_slices_replaces_only_those_slices(scene):
    """A prompt's answer replaces its slices of one segment; other slices and segments stay as they were."""
    import slicer

    from PolyCLSegmentLib import conversions, segmentedit

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    slicer.util.updateVolumeFromArray(node, np.zeros((6, 20, 24), np.int16))
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    mask = np.zeros((6, 20, 24), np.uint8)
    mask[:, 5:15, 5:15] = 1
    sid = segmentedit.applyMask(seg, node, mask, segmentName="a")
    other = segmentedit.applyMask(seg, node, mask, segmentName="b")
    slab = np.zeros((2, 20, 24), np.uint8)
    slab[:, 2:8, 10:22] = 1
    segmentedit.writeSlices(seg, node, sid, slab, 2)
    expected = mask.copy()
    expected[2:4] = slab
    assert np.array_equal(conversions.segmentArray(seg, sid, node), expected)
    assert np.array_equal(conversions.segmentArray(seg, other, node), mask)



def test_undo_history_can_be_the_editors_own(scene):
    """A front end hands its segment editor's vtkSegmentationHistory to the module: one undo stack."""
    import slicer

    from PolyCLSegmentLib import conversions, segmentedit

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    slicer.util.updateVolumeFromArray(node, np.zeros((4, 10, 12), np.int16))
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    sid = seg.GetSegmentation().AddEmptySegment("a")
    editors = slicer.vtkSegmentationHistory()
    history = segmentedit.UndoHistory()
    history.useHistory(seg, editors)
    mask = np.zeros((4, 10, 12), np.uint8)
    mask[1, 2:5, 3:7] = 1
    segmentedit.writeSlices(seg, node, sid, mask[1:2], 1, history=history)
    assert editors.IsRestorePreviousStateAvailable() and history.canUndo(seg)
    assert history.undo(seg) and not conversions.segmentArray(seg, sid, node).any()
