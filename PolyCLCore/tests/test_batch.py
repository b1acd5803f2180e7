"""Batch mode of ``polycl segment DIR -o OUT``: one line per case, failures isolated, resumable."""

import csv

import numpy as np

from polycl.cli.main import main
from polycl.io import read_volume


def test_batch_isolates_failures_and_resumes(tmp_path, ts, capsys):
    inp, out = tmp_path / "in", tmp_path / "out"
    inp.mkdir()
    (inp / "a_ct.nii.gz").symlink_to(ts / "example_ct_sm.nii.gz")
    (inp / "b_mr.nii.gz").symlink_to(ts / "example_mr_sm.nii.gz")
    (inp / "c_broken.nii.gz").write_bytes(b"not an image" * 50)
    (inp / "dicom").symlink_to(ts / "example_ct_dicom", target_is_directory=True)

    argv = ["segment", str(inp), "-o", str(out), "--device", "cpu", "--mode", "unet", "--prior", "off"]  # U-Net only
    assert main(argv) == 1  # some cases failed
    text = capsys.readouterr().out
    assert "a_ct: done" in text and "dicom: done" in text and "mode unet" in text  # each case says what ran
    assert "b_mr: failed" in text and "does not look like CT" in text and "c_broken: failed" in text
    assert "summary: 2 done, 0 skipped, 2 failed" in text
    assert sorted(p.name for p in out.iterdir()) == ["a_ct.nii.gz", "dicom.nii.gz", "report.csv"]
    dicom_mask = read_volume(out / "dicom.nii.gz")
    dicom_ct = read_volume(ts / "example_ct_dicom")
    assert dicom_mask.shape == dicom_ct.shape
    np.testing.assert_allclose(dicom_mask.geometry.index_to_lps(), dicom_ct.geometry.index_to_lps(), atol=1e-4)
    assert dicom_mask.array.any()
    first = (out / "a_ct.nii.gz").stat().st_mtime_ns

    assert main(argv) == 1
    text = capsys.readouterr().out
    assert "a_ct: skipped" in text and "dicom: skipped" in text and "summary: 0 done, 2 skipped, 2 failed" in text
    assert (out / "a_ct.nii.gz").stat().st_mtime_ns == first  # finished outputs are not rewritten
    report = list(csv.DictReader(open(out / "report.csv")))
    rows = {r["case"]: r["status"] for r in report}
    assert rows == {"a_ct": "skipped", "b_mr": "failed", "c_broken": "failed", "dicom": "skipped"}
