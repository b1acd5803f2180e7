"""DICOM found by content, not by file name: exports name files by UID or number with
no extension. Real series: the shared example_ct_dicom, copied to such names. A folder holding two
series is refused with both listed, never merged; ``--series UID`` picks one."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from polycl.cases import find_images
from polycl.cli.main import main
from polycl.errors import InputError
from polycl.io import dicom_series, is_dicom_folder, read_volume

SECOND_UID = "1.2.826.0.1.3680043.8.498.99887766554433221100"


def uid_named_copy(src, dest):
    """The series' files copied to UID-like names without extension (as many PACS exports do)."""
    dest.mkdir(parents=True)
    for i, f in enumerate(sorted(src.iterdir())):
        shutil.copy(f, dest / f"1.3.12.2.1107.5.1.4.{60064 + i}")
    return dest


def write_second_series(volume_path, dest, n=5):
    """A second CT series (n slices of example_ct_sm) written with GDCM into ``dest``.

    GDCM's writer leaves the process locale at "C" (measured: LC_CTYPE C.UTF-8 -> C), which would
    make later tests decode subprocess output as ASCII; the locale is restored afterwards."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    try:
        _write_series(volume_path, dest, n)
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _write_series(volume_path, dest, n):
    image = sitk.ReadImage(str(volume_path))
    writer = sitk.ImageFileWriter()
    writer.SetImageIO("GDCMImageIO")
    writer.KeepOriginalImageUIDOn()
    direction = image.GetDirection()
    for k in range(n):
        s = sitk.Cast(image[:, :, k], sitk.sitkInt16)
        origin = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in {"0008|0060": "CT", "0020|000e": SECOND_UID, "0020|000d": SECOND_UID + ".1",
                           "0008|103e": "second series", "0020|0013": str(k + 1),
                           "0020|0032": "\\".join(map(str, origin)),
                           "0020|0037": "\\".join(map(str, (direction[0], direction[3], direction[6],
                                                             direction[1], direction[4], direction[7]))),
                           "0008|0018": f"{SECOND_UID}.{k + 1}"}.items():
            s.SetMetaData(tag, value)
        writer.SetFileName(str(dest / f"IMG{k:04d}"))
        writer.Execute(s)


def test_series_with_uid_names_and_no_extension_is_read_and_segmented(ts, tmp_path, capsys):
    folder = uid_named_copy(ts / "example_ct_dicom", tmp_path / "export")
    assert is_dicom_folder(folder)
    original = read_volume(ts / "example_ct_dicom")
    copy = read_volume(folder)
    assert np.array_equal(copy.array, original.array)
    assert main(["info", str(folder)]) == 0
    out_copy, out_orig = tmp_path / "copy.nii.gz", tmp_path / "orig.nii.gz"
    assert main(["segment", str(folder), "-o", str(out_copy), "--mode", "unet", "--device", "cpu"]) == 0
    assert main(["segment", str(ts / "example_ct_dicom"), "-o", str(out_orig), "--mode", "unet", "--device", "cpu"]) == 0
    mask = read_volume(out_copy).array
    assert mask.any() and np.array_equal(mask, read_volume(out_orig).array)


def test_batch_finds_series_folders_by_content(ts, tmp_path):
    cohort = tmp_path / "cohort"
    uid_named_copy(ts / "example_ct_dicom", cohort / "patient_a")
    (cohort / "b.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (cohort / "notes").mkdir()
    (cohort / "notes" / "readme").write_text("not an image")
    assert [c.name for c in find_images(cohort)] == ["b", "patient_a"]
    out = tmp_path / "out"
    assert main(["segment", str(cohort), "-o", str(out), "--mode", "unet", "--device", "cpu"]) == 0
    assert (out / "patient_a.nii.gz").is_file() and (out / "b.nii.gz").is_file()


def test_two_series_are_listed_never_merged_and_series_picks_one(ts, tmp_path, capsys):
    folder = uid_named_copy(ts / "example_ct_dicom", tmp_path / "two")
    write_second_series(ts / "example_ct_sm.nii.gz", folder)
    found = {s["uid"]: s for s in dicom_series(folder)}
    first_uid = next(u for u in found if u != SECOND_UID)
    assert len(found) == 2 and found[SECOND_UID]["files"] == 5 and found[first_uid]["files"] == 20
    with pytest.raises(InputError, match="2 DICOM series; they are never merged") as err:
        read_volume(folder)
    assert first_uid in str(err.value) and SECOND_UID in str(err.value) and "'second series'" in str(err.value)
    out = tmp_path / "mask.nii.gz"
    assert main(["segment", str(folder), "-o", str(out), "--mode", "unet", "--device", "cpu"]) == 2
    assert "never merged" in capsys.readouterr().err and not out.exists()
    assert main(["segment", str(folder), "-o", str(out), "--series", first_uid, "--mode", "unet", "--device", "cpu"]) == 0
    assert read_volume(out).shape == (20, 512, 512)
    assert read_volume(folder, series=SECOND_UID).shape[0] == 5
    with pytest.raises(InputError, match="no DICOM series with UID 1.2.3"):
        read_volume(folder, series="1.2.3")
