"""Every validation error of the foundation issue, each with a message that says why."""

import numpy as np
import pytest
import SimpleITK as sitk

from polycl.cli.main import main
from polycl.errors import InputError, NotCTError
from polycl.io import read_volume
from polycl.validate import ct_report, require_ct


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "nope.nii.gz")


def test_unreadable_file(tmp_path):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file at all" * 10)
    with pytest.raises(InputError, match="cannot be read"):
        read_volume(bad)


def test_2d_image_refused(tmp_path):
    p = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image(64, 64, sitk.sitkInt16), str(p))
    with pytest.raises(InputError, match="2D"):
        read_volume(p)


def test_4d_image_refused(tmp_path):
    p = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkInt16), str(p))
    with pytest.raises(InputError, match="3D"):
        read_volume(p)


def test_multi_component_refused(tmp_path):
    p = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.Image([16, 16, 4], sitk.sitkVectorUInt8, 3), str(p))
    with pytest.raises(InputError, match="components"):
        read_volume(p)


def test_mr_is_not_ct(ts):
    mr = read_volume(ts / "example_mr_sm.nii.gz")
    report = ct_report(mr)
    assert not report.is_ct and "no air near -1000 HU" in report.reason
    with pytest.raises(NotCTError, match="does not look like CT"):
        require_ct(mr)


@pytest.mark.parametrize("rel", ["totalsegmentator/example_ct.nii.gz", "totalsegmentator/aorta_ct_cropped.nii.gz",
                                 "deeplesion/000015_01_01_103-115.nii.gz", "dcmqi/ct-3slice"])
def test_real_cts_are_ct(data, rel):
    assert ct_report(read_volume(data / rel)).is_ct


def test_info_command(ts, capsys):
    assert main(["info", str(ts / "example_ct.nii.gz")]) == 0
    out = capsys.readouterr().out
    assert "122 x 101 x 112" in out and "looks like CT" in out and "point to R, A, S" in out and "(LPS: x to the left" in out
    assert main(["info", str(ts / "example_mr_sm.nii.gz")]) == 1
    assert "NOT CT" in capsys.readouterr().out


def test_segment_refuses_mr_and_writes_nothing(ts, tmp_path, capsys):
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(ts / "example_mr_sm.nii.gz"), "-o", str(out)]) == 2
    assert "does not look like CT" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_nan_refused():
    from polycl.volume import Geometry, Volume

    a = np.full((3, 20, 20), -1000.0, np.float32)
    a[1, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        ct_report(Volume(a, Geometry((1, 1, 1), (0, 0, 0))))
