"""Geometry: canonical reorientation is exact for flipped, permuted and oblique directions."""

import numpy as np
import pytest
import SimpleITK as sitk

from polycl.io import read_volume, write_volume
from polycl.preprocess import from_canonical, to_canonical
from polycl.volume import Geometry, Volume


def _rotation_z(degrees):
    t = np.radians(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def test_canonical_round_trip_on_permuted_flipped_real_ct(data):
    """The DeepLesion volume has x/y swapped and z flipped (orientation PLI)."""
    vol = read_volume(data / "deeplesion" / "000015_01_01_103-115.nii.gz")
    assert vol.geometry.orientation_code() != "LPS"
    canon = to_canonical(vol)
    np.testing.assert_array_equal(from_canonical(canon, vol), vol.array)


def test_canonical_puts_the_same_anatomy_in_the_same_place(ts):
    """A RAS file and its LPS re-write give identical canonical arrays."""
    vol = read_volume(ts / "example_ct_sm.nii.gz")
    assert vol.geometry.orientation_code() == "RAS"
    lps = sitk.DICOMOrient(vol.to_sitk(), "LPS")
    np.testing.assert_array_equal(to_canonical(vol), sitk.GetArrayFromImage(lps))
    # voxel (k, j, i) of the canonical array is at the same physical point in both
    lps_vol = Volume.from_sitk(lps)
    np.testing.assert_array_equal(to_canonical(lps_vol), to_canonical(vol))


def test_oblique_direction_survives_write_and_canonical(tmp_path, ts):
    vol = read_volume(ts / "example_ct_sm.nii.gz")
    d = _rotation_z(12) @ np.asarray(vol.geometry.direction).reshape(3, 3)
    oblique = Volume(vol.array, Geometry(vol.geometry.spacing, vol.geometry.origin, tuple(d.ravel())))
    back = read_volume(write_volume(oblique, tmp_path / "oblique.nii.gz"))
    np.testing.assert_allclose(np.asarray(back.geometry.direction), d.ravel(), atol=1e-5)
    np.testing.assert_array_equal(from_canonical(to_canonical(back), back), back.array)


def test_index_to_lps_matches_simpleitk(ts):
    vol = read_volume(ts / "example_ct.nii.gz")
    img = vol.to_sitk()
    m = vol.geometry.index_to_lps()
    for idx in [(0, 0, 0), (10, 20, 30), (121, 100, 111)]:
        np.testing.assert_allclose(m @ np.array([*idx, 1.0]), [*img.TransformIndexToPhysicalPoint(idx), 1.0], atol=1e-6)
    g = Geometry.from_index_to_lps(m)  # the matrix gives back the same spacing, origin and direction
    np.testing.assert_allclose([*g.spacing, *g.origin, *g.direction],
                               [*vol.geometry.spacing, *vol.geometry.origin, *vol.geometry.direction], rtol=0, atol=1e-9)


def test_bad_geometry_is_refused():
    from polycl.errors import InputError

    with pytest.raises(InputError, match="positive"):
        Geometry((0, 1, 1), (0, 0, 0))
    with pytest.raises(InputError, match="orthonormal"):
        Geometry((1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 2, 0, 0, 0, 1))
