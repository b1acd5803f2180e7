"""Shared fixtures: the real CT folder and small helpers.

Tests that need the real data use the ``data`` fixture (Testing/data_fixtures.py, shared with the
Slicer module's tests): without it they skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "Testing") not in sys.path:
    sys.path.insert(0, str(ROOT / "Testing"))

from data_fixtures import data, one_torch_thread, ts  # noqa: E402,F401  (fixtures)

one_torch_thread()


@pytest.fixture(scope="session")
def example_ct(ts):
    from polycl.io import read_volume

    return read_volume(ts / "example_ct.nii.gz")


@pytest.fixture(scope="session")
def example_liver(ts):
    """Liver mask (label 5) of example_ct, on its grid."""
    from polycl.io import read_label, select_labels

    lab = read_label(ts / "example_seg_fast_force_split.nii.gz")
    return lab.with_array(select_labels(lab.array, 5))


@pytest.fixture(scope="session")
def dicom_ct(ts):
    from polycl.io import read_volume

    return read_volume(ts / "example_ct_dicom")


@pytest.fixture(scope="session")
def dicom_liver(ts, dicom_ct):
    """Liver of the DICOM series, resampled in physical space (its label file is y-flipped)."""
    from polycl.io import label_on_image_grid, read_label, select_labels

    lab = label_on_image_grid(read_label(ts / "example_seg_dicom.nii.gz"), dicom_ct)
    return lab.with_array(select_labels(lab.array, 5))


@pytest.fixture(scope="session")
def abdomen(ts, example_ct):
    """(example_ct cut to the axial slab of the liver and both kidneys, its label map (z, y, x)).

    8 slices of margin below the lowest organ slice (the liver reaches the top slice): slices 58..111
    of 112. Propagation tests run on it so that nothing far from the organs is embedded by SAM."""
    from polycl.io import read_label
    from polycl.volume import Volume

    lab = read_label(ts / "example_seg_fast_force_split.nii.gz").array
    rows = np.flatnonzero(np.isin(lab, (2, 3, 5)).any(axis=(1, 2)))
    z0, z1 = max(int(rows.min()) - 8, 0), min(int(rows.max()) + 8, lab.shape[0] - 1) + 1
    return Volume.from_sitk(example_ct.to_sitk()[:, :, z0:z1]), lab[z0:z1]


@pytest.fixture(scope="session")
def abdomen_segmenter(abdomen):
    """One LiteMedSAM SliceSegmenter on :func:`abdomen` for the whole session: each slice is embedded once."""
    from polycl.sam import SliceSegmenter

    return SliceSegmenter(abdomen[0], device="cpu", cache_size=abdomen[0].shape[0])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    denom = a.sum() + b.sum()
    return float(2 * (a & b).sum() / denom) if denom else 1.0


#: Slices of the clinical validation scan the held-out tests use (0..99 of 129, 1.6 mm): the whole
#: right kidney (2..48), the left kidney but for its top 3 slices (41..102) and the liver's lower three
#: quarters (27..99 of 27..124). The slices above, most of them liver dome, are left out because each
#: slice a test reaches costs a SAM embedding.
CLINICAL_SLAB = (0, 100)


@pytest.fixture(scope="session")
def clinical(data):
    """(CT, {organ: expert mask (z, y, x) uint8}) of the clinical validation scan (3D-IRCADb-01 patient 1,
    contrast-enhanced, 0.57 x 0.57 x 1.6 mm; ../shared/data/README.md), cut in memory to
    :data:`CLINICAL_SLAB`. No bundled model or atlas was made from it: tests on it measure
    generalisation. Its licence allows evaluation only, so it is read from the data folder and never
    written into the repository. The cut is SimpleITK slicing, which keeps physical space."""
    import SimpleITK as sitk

    from polycl.volume import Volume

    folder = data / "ircadb" / "patient01"
    z0, z1 = CLINICAL_SLAB
    image = sitk.ReadImage(str(folder / "ct.nii.gz"))[:, :, z0:z1]
    assert np.allclose(image.GetDirection(), np.eye(3).ravel())  # axis 0 is axial, x runs right to left
    masks = {}
    for organ in ("liver", "rightkidney", "leftkidney"):
        m = sitk.ReadImage(str(folder / f"{organ}.nii.gz"))[:, :, z0:z1]
        assert m.GetSize() == image.GetSize() and np.allclose(m.GetOrigin(), image.GetOrigin())
        masks[organ] = sitk.GetArrayFromImage(m).astype(np.uint8)
    return Volume.from_sitk(image), masks


@pytest.fixture(scope="session")
def clinical_segmenter(clinical):
    """One LiteMedSAM SliceSegmenter on :func:`clinical` for the whole session: the held-out Segment and
    propagation tests embed each slice once between them."""
    from polycl.sam import SliceSegmenter

    return SliceSegmenter(clinical[0], device="cpu", cache_size=clinical[0].shape[0])

