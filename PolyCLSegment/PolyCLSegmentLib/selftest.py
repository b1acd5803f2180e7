"""The module's in-Slicer self-test, kept here so that ``PolyCLSegment.py`` stays thin.

:func:`segmentUndoLock` runs inside a real Slicer (``PolyCLSegmentTest``) and under pytest on
slicer-core (``test_module_self_test_runs_under_the_harness``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import slicer
import torch

from PolyCLSegmentLib import conversions, segmentedit


def segmentUndoLock(test, logic) -> None:
    """Segment a synthetic CT (12 x 64 x 64, HU) with a tiny U-Net whose output layer says "organ"
    everywhere: the segment covers the volume except the locked segment, which stays as it was,
    and Undo removes the new segment. ``test``: a unittest.TestCase (for its asserts)."""
    from polycl.checkpoint import save_checkpoint
    from polycl.networks import build_segmentation_model

    rng = np.random.default_rng(0)
    hu = np.full((12, 64, 64), -1000, np.int16)
    hu[:, 8:56, 8:56] = 40
    hu[3:9, 20:44, 16:40] = 120
    hu += rng.integers(-20, 20, hu.shape).astype(np.int16)
    volumeNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "synthetic CT")
    slicer.util.updateVolumeFromArray(volumeNode, hu)
    volumeNode.SetSpacing(0.8, 0.8, 2.5)
    volumeNode.SetIJKToRASDirections([[-1, 0, 0], [0, -1, 0], [0, 0, 1]])
    torch.manual_seed(3)
    config = {"encoder": {"name": "unet", "features": [4, 8, 16]}, "out_channels": 1}
    model = build_segmentation_model(config)
    with torch.no_grad():  # an output layer that says "organ" everywhere: a known, non-empty mask
        model.out.conv.conv.weight.zero_()
        model.out.conv.conv.bias.fill_(20.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.pt"
        save_checkpoint(path, model, config, meta={"target": "liver", "preprocess": {"size": 64}})
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        locked = segmentationNode.GetSegmentation().AddEmptySegment("locked")
        box = np.zeros(hu.shape, np.uint8)
        box[4:8, 10:30, 10:30] = 1
        segmentedit.applyMask(segmentationNode, volumeNode, box, segmentId=locked)
        segmentedit.setSegmentLocked(segmentationNode.GetSegmentation().GetSegment(locked))
        segId = logic.segment(volumeNode, segmentationNode, model=str(path), mode="unet", overwriteOthers=True,
                              prior="off")  # a synthetic CT: no atlas can be placed on it
        written = conversions.segmentArray(segmentationNode, segId, volumeNode)
        test.assertTrue(written.all() or written.sum() > 0.9 * written.size)  # "organ" everywhere ...
        test.assertFalse(written[box > 0].any())  # ... except in the locked segment, untouched
        test.assertTrue((conversions.segmentArray(segmentationNode, locked, volumeNode) == box).all())
        test.assertEqual(segmentationNode.GetSegmentation().GetNumberOfSegments(), 2)
        test.assertTrue(logic.undo(segmentationNode))
        test.assertIsNone(segmentationNode.GetSegmentation().GetSegment(segId))
