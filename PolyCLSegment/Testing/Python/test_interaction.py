"""Prompts through the Controller on real CT and real MRML, with the bundled LiteMedSAM.

A slab of 10 slices of ``example_ct_sm`` (3 mm voxels) around the liver's largest slice keeps the
embeddings (~2 s each on 2 cores) within the budget. Thresholds: Dice >= 0.85 on the
clicked slice and 3D Dice >= 0.85 after "propagate from clicks".
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from conftest import dice, slab_node

SLAB = 10


@pytest.fixture()
def slab(liver_case):
    """(CT slab node, its liver mask (z, y, x), the liver's largest slice in the slab)."""
    ct, liver, k = liver_case
    k0 = max(0, min(k - SLAB // 2, liver.shape[0] - SLAB))
    return slab_node(ct, k0, SLAB), liver[k0:k0 + SLAB], k - k0


def _centre(mask2d) -> tuple[int, int]:
    """The robot user's first click: the largest distance-transform point of the organ."""
    d = ndimage.distance_transform_edt(mask2d)
    y, x = np.unravel_index(np.argmax(d), d.shape)
    return int(y), int(x)


def test_include_exclude_undo_and_other_segments(slab, module):
    import slicer

    from PolyCLSegmentLib import segmentedit
    from PolyCLSegmentLib.controller import Controller
    from PolyCLSegmentLib.settings import Settings

    from polycl.errors import InputError

    ct, liver, k = slab
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    sid = seg.GetSegmentation().AddEmptySegment("liver")
    other = np.zeros_like(liver)
    other[:, :20, :20] = 1  # another segment, overlapping nothing the click answers: must stay as it is
    oid = segmentedit.applyMask(seg, ct, other, segmentName="other")
    c = Controller(module.PolyCLSegmentLogic(), Settings(device="cpu", propagateFromClicks=False))
    try:
        assert c.sliceChanged(ct, k) is False  # nothing is prompted on this CT yet: no background embedding
        y, x = _centre(liver[k])
        pid = c.addPoint(ct, seg, sid, c.rasOfVoxel(ct, (k, y, x)), include=True)
        assert c.wait(300).error is None
        got = c.segmentArray(seg, sid, ct)
        assert dice(got[k], liver[k]) >= 0.85, dice(got[k], liver[k])
        assert not np.delete(got, k, axis=0).any()  # that slice only
        assert np.array_equal(c.segmentArray(seg, oid, ct), other)
        include = c.placeList(ct, seg, sid, True)
        assert include.GetNumberOfControlPoints() == 1 and pid in c.promptAnswers.prompts and c.promptCount() == 1

        # moving the point re-answers its slice; the markup follows
        first = c.segmentArray(seg, sid, ct)
        moved = c.rasOfVoxel(ct, (k, y, x + 1))
        c.movePrompt(pid, moved)
        assert c.wait(120).error is None
        assert np.allclose(include.GetNthControlPointPositionWorld(0), moved)
        assert dice(c.segmentArray(seg, sid, ct)[k], liver[k]) >= 0.85
        beforeRemoval = c.segmentArray(seg, sid, ct)
        # the user deletes the point in the view: its answer goes
        include.RemoveNthControlPoint(0)
        assert c.wait(120).error is None and not c.segmentArray(seg, sid, ct).any() and not c.promptAnswers.prompts
        # undo brings the point back (markup and answer), a second undo puts it back where it was first
        assert c.undo(seg) and c.promptCount() == 1 and include.GetNumberOfControlPoints() == 1
        assert np.allclose(include.GetNthControlPointPositionWorld(0), moved)
        assert np.array_equal(c.segmentArray(seg, sid, ct), beforeRemoval)
        assert c.undo(seg) and np.allclose(include.GetNthControlPointPositionWorld(0), c.rasOfVoxel(ct, (k, y, x)))
        assert np.array_equal(c.segmentArray(seg, sid, ct), first)
        # deleted again; the user places one again: its answer comes back
        include.RemoveNthControlPoint(0)
        assert c.wait(120).error is None and not c.segmentArray(seg, sid, ct).any() and not c.promptAnswers.prompts
        include.AddControlPointWorld(*moved)
        include.InvokeEvent(include.PointPositionDefinedEvent)
        assert c.wait(120).error is None
        got = c.segmentArray(seg, sid, ct)
        assert dice(got[k], liver[k]) >= 0.85 and len(c.promptAnswers.prompts) == 1

        # a box around the liver on that slice, into another segment
        bid = seg.GetSegmentation().AddEmptySegment("boxed")
        ys, xs = np.nonzero(liver[k])
        c.addBox(ct, seg, bid, c.rasOfVoxel(ct, (k, ys.min() - 2, xs.min() - 2)),
                 c.rasOfVoxel(ct, (k, ys.max() + 2, xs.max() + 2)))
        assert c.wait(120).error is None
        assert dice(c.segmentArray(seg, bid, ct)[k], liver[k]) >= 0.85

        # scrolling: only the slice where the user stops is embedded in the background, before any click there
        from PolyCLSegmentLib import conversions

        segmenter = c.logic.segmenterFor(conversions.volumeFromNode(ct), "litemedsam", "cpu")
        before = segmenter.embeddings_computed
        assert c.sliceChanged(ct, k - 1, radius=0) and c.sliceChanged(ct, k + 1, radius=0)  # k - 1 passed by
        assert c.promptAnswers._prefetch[0].wait(120) and segmenter.embeddings_computed == before + 1
        grid = c.promptAnswers.targets[(seg.GetID(), sid)].session.grid  # IJK k -> the segmenter's canonical k
        assert segmenter.is_cached(grid.to_canonical_voxel((k + 1, 0, 0))[0])
        assert not segmenter.is_cached(grid.to_canonical_voxel((k - 1, 0, 0))[0])
        c.clearPrompts(seg, bid)
        assert np.array_equal(c.segmentArray(seg, sid, ct), got)  # the voxels stay

        # a leak: a disc of other tissue (HU far from the liver's) joined to the liver's edge, in a second
        # segment made before any prompt on it; an exclude click in the disc removes it
        hu = slicer.util.arrayFromVolume(ct)[k].astype(float)
        organ = liver[k].astype(bool)
        ring = ndimage.binary_dilation(organ, iterations=4) & ~ndimage.binary_dilation(organ, iterations=2)
        far = ring & (np.abs(ndimage.median_filter(hu, 5) - np.median(hu[organ])) > 100)
        cy, cx = (int(v) for v in np.argwhere(far)[len(np.argwhere(far)) // 2])
        yy, xx = np.ogrid[:hu.shape[0], :hu.shape[1]]
        leak = (((yy - cy) ** 2 + (xx - cx) ** 2) <= 16) & ~organ
        leaky = np.zeros_like(liver)
        leaky[k] = organ | leak
        lid = segmentedit.applyMask(seg, ct, leaky, segmentName="leaky")
        c.addPoint(ct, seg, lid, c.rasOfVoxel(ct, (k, cy, cx)), include=False)
        assert c.wait(120).error is None
        after = c.segmentArray(seg, lid, ct)[k]
        # the leak goes (a rim of pixels whose HU matches the liver's may stay: at most a fifth), the liver stays
        left = int((after & leak).sum())
        assert left <= 0.2 * leak.sum() and dice(after, liver[k]) > max(0.95, dice(leaky[k], liver[k])), (
            left, int(leak.sum()), dice(after, liver[k]), dice(leaky[k], liver[k]))

        # undo steps back one prompt: the leak is back, the exclude point is gone
        exclude = c.promptAnswers.pointNode(ct, seg, lid, False)
        assert exclude.GetNumberOfControlPoints() == 1
        assert c.undo(seg)
        assert np.array_equal(c.segmentArray(seg, lid, ct), leaky)
        assert exclude.GetNumberOfControlPoints() == 0

        # a locked segment is never changed by a prompt
        segmentedit.setSegmentLocked(seg.GetSegmentation().GetSegment(oid))
        with pytest.raises(InputError, match="locked"):
            c.addPoint(ct, seg, oid, c.rasOfVoxel(ct, (k, y, x)), include=True)
        assert np.array_equal(c.segmentArray(seg, oid, ct), other)
        c.finishSegment(seg)
        assert not c.promptAnswers.prompts and slicer.mrmlScene.GetNodeByID(include.GetID()) is None
    finally:
        c.shutdown()


def test_propagate_from_clicks_and_local_correction(slab, module):
    import slicer

    from PolyCLSegmentLib import segmentedit
    from PolyCLSegmentLib.controller import Controller
    from PolyCLSegmentLib.settings import Settings

    ct, liver, k = slab
    seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    sid = seg.GetSegmentation().AddEmptySegment("liver")
    c = Controller(module.PolyCLSegmentLogic(), Settings(device="cpu", engine="chain", propagateFromClicks=True))
    try:
        y, x = _centre(liver[k])
        # one click, placed as the panel places it (place mode on the segment's include list): the click, then the fill
        include = c.promptAnswers.pointNode(ct, seg, sid, True)
        include.AddControlPointWorld(*c.rasOfVoxel(ct, (k, y, x)))
        include.InvokeEvent(include.PointPositionDefinedEvent)
        assert c.wait(600).error is None
        filled = c.segmentArray(seg, sid, ct)
        assert dice(filled, liver) >= 0.85, dice(filled, liver)

        # the user paints slice j as the label has it: that slice stays exactly so, and only a local run changes
        j = k - 3
        segmentedit.writeSlices(seg, ct, sid, liver[j:j + 1], j)
        c.correctSlice(ct, seg, sid, j)
        assert c.wait(600).error is None
        corrected = c.segmentArray(seg, sid, ct)
        assert np.array_equal(corrected[j], liver[j])
        changed = np.flatnonzero((corrected != filled).reshape(len(filled), -1).any(axis=1))
        assert len(changed) and np.all(np.diff(changed) == 1), changed  # one contiguous run, around j ...
        assert changed.min() <= j <= changed.max() and len(changed) < len(liver) - 2  # ... not the whole slab
        assert dice(corrected, liver) >= dice(filled, liver) - 0.01  # a correct slice does not make it worse
    finally:
        c.shutdown()
