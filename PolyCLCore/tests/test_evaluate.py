"""Metrics in physical units (MONAI), on files with different grids."""

import math

import numpy as np
import pytest

from polycl.cli.main import main
from polycl.evaluate import evaluate_files, mask_scores
from polycl.io import write_mask_like


def test_known_shapes_in_mm():
    ref = np.zeros((10, 40, 40), np.uint8)
    ref[2:8, 10:30, 10:30] = 1
    pred = np.roll(ref, 2, axis=2)  # shifted by 2 voxels along x
    s = mask_scores(pred, ref, (3.0, 1.0, 0.5))  # spacing z, y, x in mm
    assert s.dice == pytest.approx(18 / 20)
    assert s.hausdorff_mm == pytest.approx(1.0)  # 2 voxels * 0.5 mm
    assert s.ref_ml == pytest.approx(6 * 20 * 20 * 1.5 / 1000)
    same = mask_scores(ref, ref, (1, 1, 1))
    assert same.dice == 1.0 and same.hd95_mm == 0.0
    empty = mask_scores(np.zeros_like(ref), ref, (1, 1, 1))
    assert empty.dice == 0.0 and math.isnan(empty.hd95_mm)


def test_flipped_label_files_compare_in_physical_space(tmp_path, ts, dicom_ct, dicom_liver):
    """The resampled liver written on the DICOM grid equals the y-flipped original label file."""
    pred = write_mask_like(dicom_liver.array, dicom_ct, tmp_path / "pred.nii.gz")
    s = evaluate_files(pred, ts / "example_seg_dicom.nii.gz", label=5)
    assert s.dice == pytest.approx(1.0) and s.hd95_mm == pytest.approx(0.0)


def test_folder_mode_csv(tmp_path, ts, example_liver, example_ct, capsys):
    preds, refs = tmp_path / "pred", tmp_path / "ref"
    refs.mkdir()
    (refs / "a.nii.gz").symlink_to(ts / "example_seg_fast_force_split.nii.gz")
    write_mask_like(example_liver.array, example_ct, preds / "a.nii.gz")
    assert main(["evaluate", str(preds), str(refs), "--label", "5", "-o", str(tmp_path / "m.csv")]) == 0
    text = (tmp_path / "m.csv").read_text()
    assert text.splitlines()[0].startswith("case,dice") and "a,1.0" in text
    assert "dice: mean 1.0000" in capsys.readouterr().out
