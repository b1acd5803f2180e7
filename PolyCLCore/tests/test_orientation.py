"""polycl.orientation: SimpleITK's DICOMOrientImageFilter maps, checked against sitk.DICOMOrient itself."""

import itertools

import numpy as np
import pytest
import SimpleITK as sitk

from polycl.errors import InputError
from polycl.orientation import Orientation
from polycl.volume import Geometry, Volume


def _directions():
    """All 48 axis-aligned directions (permutations x signs) and 6 oblique ones (rotated 10..35 deg)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            for c, r in enumerate(perm):
                m[r, c] = signs[c]
            out.append(m)
    for i, deg in enumerate((10, 15, 20, 25, 30, 35)):
        t = np.radians(deg)
        rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        out.append(rot @ out[7 * i])
    return out


def test_orientation_matches_dicomorient_for_flipped_permuted_and_oblique_grids():
    rng = np.random.default_rng(0)
    arr = rng.integers(-1000, 1000, (4, 5, 6)).astype(np.int16)
    for d in _directions():
        vol = Volume(arr, Geometry((0.7, 0.8, 2.5), (1.0, -2.0, 3.0), tuple(d.ravel())))
        ref = sitk.DICOMOrient(vol.to_sitk(), "LPS")
        o = Orientation.of(vol.geometry, vol.shape)
        canon = o.to_canonical(arr)
        np.testing.assert_array_equal(canon, sitk.GetArrayFromImage(ref))
        assert o.canonical_shape == canon.shape
        assert o.spacing_xyz == pytest.approx(ref.GetSpacing(), abs=1e-9)
        np.testing.assert_array_equal(o.from_canonical(canon), arr)
        m, offset = o.index_map()  # voxel (z, y, x) of the input lands at offset + m @ (z, y, x)
        for p in ((0, 0, 0), (3, 4, 5), (1, 2, 3)):
            assert canon[tuple((offset + m @ np.array(p)).astype(int))] == arr[p]


def test_slice_and_box_maps_follow_the_voxels():
    """A box drawn on input slice k covers the same voxels as the mapped box on the canonical slice."""
    arr = np.zeros((5, 8, 10), np.uint8)
    k, box = 1, (2, 3, 6, 5)  # x0, y0, x1, y1 on input slice 1
    arr[k, 3:6, 2:7] = 1
    for d in _directions()[:48]:
        o = Orientation.of(Geometry((1, 1, 2), (0, 0, 0), tuple(d.ravel())), arr.shape)
        if o.permute_xyz[2] != 2:  # axis 0 is not axial
            with pytest.raises(InputError, match="not axial"):
                o.canonical_box(k, box)
            continue
        kc, (x0, y0, x1, y1) = o.canonical_box(k, box)
        expected = np.zeros(o.canonical_shape, np.uint8)
        expected[kc, int(y0):int(y1) + 1, int(x0):int(x1) + 1] = 1
        np.testing.assert_array_equal(o.to_canonical(arr), expected)
        assert o.input_slice(kc) == k
    with pytest.raises(InputError, match="outside"):
        Orientation.of(Geometry((1, 1, 1), (0, 0, 0)), (5, 8, 10)).canonical_slice(5)
