"""Volume I/O: round trips in every format, DICOM series, label selection and physical resampling."""

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import dice
from polycl.errors import GeometryError, InputError
from polycl.io import label_on_image_grid, read_label, read_volume, select_labels, write_mask_like, write_volume
from polycl.volume import Geometry, Volume


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_round_trip_keeps_array_and_geometry(tmp_path, ts, suffix):
    vol = read_volume(ts / "example_ct_sm.nii.gz")
    out = write_volume(vol, tmp_path / f"ct{suffix}")
    back = read_volume(out)
    assert back.shape == vol.shape == (30, 101, 122)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.geometry.spacing, vol.geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(back.geometry.origin, vol.geometry.origin, atol=1e-4)
    np.testing.assert_allclose(back.geometry.direction, vol.geometry.direction, atol=1e-6)
    assert not list(tmp_path.glob(".tmp-*")), "atomic write left a temporary file"


def test_dicom_series_folder(dicom_ct):
    assert dicom_ct.shape == (20, 512, 512)
    np.testing.assert_allclose(dicom_ct.geometry.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-6)
    assert dicom_ct.array.min() <= -1000  # HU, rescale applied by GDCM


def test_flipped_dicom_label_lands_on_the_liver(ts, dicom_ct, dicom_liver):
    """example_seg_dicom.nii.gz is y-flipped relative to the series: index-by-index it misses the liver."""
    raw = read_label(ts / "example_seg_dicom.nii.gz")
    assert raw.geometry.direction[4] == -1.0 and dicom_ct.geometry.direction[4] == 1.0
    liver_hu = np.median(dicom_ct.array[dicom_liver.array > 0])
    naive = select_labels(raw.array, 5)
    assert 60 <= liver_hu <= 160, liver_hu  # enhanced liver parenchyma
    assert dice(naive, dicom_liver.array) < 0.6  # index-by-index puts it elsewhere (measured 0.52)
    assert dicom_liver.array.sum() == select_labels(raw.array, 5).sum()  # a pure flip: no voxel lost


def test_select_labels_by_name_and_values():
    a = np.array([[[0, 2, 3, 5, 7]]])
    assert select_labels(a, "kidney").tolist() == [[[0, 1, 1, 0, 0]]]
    assert select_labels(a, 5).tolist() == [[[0, 0, 0, 1, 0]]]
    assert select_labels(a, [5, 7]).tolist() == [[[0, 0, 0, 1, 1]]]
    assert select_labels(a, "2,3").tolist() == select_labels(a, "2+3").tolist() == select_labels(a, "kidney").tolist()
    with pytest.raises(InputError, match="neither a target"):
        select_labels(a, "brain")
    with pytest.raises(InputError, match="0 is background"):
        select_labels(a, "0,5")


def test_label_far_away_is_refused(example_ct):
    far = Volume(np.zeros((5, 10, 10), np.uint8), Geometry((3, 3, 3), (5000.0, 0.0, 0.0)), "far.nii.gz")
    with pytest.raises(GeometryError, match="do not overlap"):
        label_on_image_grid(far, example_ct)


def test_require_same_grid_option(ts, dicom_ct):
    with pytest.raises(GeometryError, match="not on the image.s grid"):
        label_on_image_grid(read_label(ts / "example_seg_dicom.nii.gz"), dicom_ct, require_same_grid=True)


def test_write_mask_like_uses_reference_geometry(tmp_path, dicom_ct):
    mask = np.zeros(dicom_ct.shape, np.uint8)
    mask[3:5, 100:120, 200:230] = 1
    out = write_mask_like(mask, dicom_ct, tmp_path / "m.nrrd")
    img = sitk.ReadImage(str(out))
    assert img.GetOrigin() == pytest.approx(dicom_ct.geometry.origin)
    assert img.GetDirection() == pytest.approx(dicom_ct.geometry.direction)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), mask)
    with pytest.raises(GeometryError):
        write_mask_like(mask[:-1], dicom_ct, tmp_path / "bad.nii.gz")
    assert not (tmp_path / "bad.nii.gz").exists()
