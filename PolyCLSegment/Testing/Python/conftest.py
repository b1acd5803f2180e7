"""pytest fixtures for the PolyCLSegment module: real MRML from slicer-core, real CT, a tiny model.

The slicer-core harness (Testing/slicer_harness.py) makes ``import slicer, qt, ctk`` and the
ScriptedLoadableModule base classes work without Slicer's Qt application, so ``PolyCLSegment.py``
is imported as is and its Logic runs against real MRML nodes. Real CT comes from the same data
folder as the core's tests (POLYCL_DATA_DIR or ../shared/data); under CI=true a missing folder fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
for p in (ROOT / "Testing", ROOT / "PolyCLSegment"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from slicer_harness import install, new_scene  # noqa: E402

install()

from data_fixtures import data, one_torch_thread, ts  # noqa: E402,F401  (fixtures)

one_torch_thread()


@pytest.fixture()
def scene():
    """A fresh MRML scene (slicer.mrmlScene) for each test."""
    return new_scene()


@pytest.fixture(scope="session")
def module():
    import PolyCLSegment

    return PolyCLSegment


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small segmentation U-Net checkpoint (fixed random weights, 64 px slices).

    Its masks are arbitrary but deterministic and spatially structured, which is what geometry
    tests need: any misplacement between MRML and polycl shows as a voxel mismatch.
    """
    import torch

    from polycl.checkpoint import save_checkpoint
    from polycl.networks import build_segmentation_model

    torch.manual_seed(3)
    config = {"encoder": {"name": "unet", "features": [4, 8, 16]}, "out_channels": 1}
    model = build_segmentation_model(config)
    path = tmp_path_factory.mktemp("models") / "tiny-random.pt"
    save_checkpoint(path, model, config, meta={"target": "liver", "preprocess": {"size": 64}, "components": 1})
    return path


def load_volume_node(path, labelmap: bool = False, name: str = ""):
    """Read an image file into a new volume node with Slicer's own reader (a storage node)."""
    import slicer

    cls = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = slicer.mrmlScene.AddNewNodeByClass(cls, name or Path(path).name.split(".")[0])
    storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    if labelmap:
        storage.SetCenterImage(False)
    assert storage.ReadData(node), f"Slicer could not read {path}"
    node.SetAndObserveStorageNodeID(storage.GetID())
    return node


@pytest.fixture()
def load_node():
    """:func:`load_volume_node` for tests (the module name 'conftest' is shared with the core's tests)."""
    return load_volume_node


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    denom = a.sum() + b.sum()
    return float(2 * (a & b).sum() / denom) if denom else 1.0


@pytest.fixture()
def liver_case(scene, ts):
    """(CT node of example_ct_sm, its liver mask (z, y, x) as in the node, the slice with most liver)."""
    import slicer

    ct = load_volume_node(ts / "example_ct_sm.nii.gz", name="ct")
    label = load_volume_node(ts / "example_seg_fast" / "liver.nii.gz", labelmap=True, name="liver")
    liver = (slicer.util.arrayFromVolume(label) > 0).astype(np.uint8)
    k = int(np.argmax(liver.sum(axis=(1, 2))))
    return ct, liver, k


def add_volume_node(volume, name: str = "", labelmap: bool = False):
    """A new scalar (or label map) volume node holding a polycl Volume (voxels and geometry)."""
    import slicer

    from PolyCLSegmentLib import conversions

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode",
                                              name or volume.source or "volume")
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(volume.array))
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(conversions.ijkToRasFromGeometry(volume.geometry)))
    node.CreateDefaultDisplayNodes()
    return node


def provenance(segment) -> dict[str, str]:
    """The ``PolyCL.*`` provenance tags of a segment."""
    from PolyCLSegmentLib import segmentedit

    found = {}
    for key in segmentedit.PROVENANCE_KEYS:
        value = segmentedit.segmentTag(segment, segmentedit.TAG_PREFIX + key)
        if value is not None:
            found[segmentedit.TAG_PREFIX + key] = value
    return found


def slab_node(ct, first: int, count: int, name: str = "slab"):
    """A new volume node holding slices ``first .. first + count - 1`` of ``ct`` where they are in space
    (a bounded slab keeps SAM tests within the suite's time budget)."""
    import slicer

    from PolyCLSegmentLib import conversions

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(slicer.util.arrayFromVolume(ct)[first:first + count]))
    m = conversions.ijkToRasArray(ct)
    m[:3, 3] = (m @ [0, 0, first, 1.0])[:3]
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(m))
    return node
