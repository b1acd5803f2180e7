"""The leave-one-scan-out study script: its data preparation (one label convention on each image's
grid), its outputs (CSV, the markdown table of the docs, the plot; a partial rerun keeps the older
rows) and its atlas prior folds (a fold never uses its own scan as the atlas). Training and
evaluation themselves are the library's finetune and pipeline, tested elsewhere."""

import csv
import importlib.util
import os
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "loso_study.py"


def _script():
    spec = importlib.util.spec_from_file_location("loso_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_data_writes_binary_liver_labels_on_each_image_grid(tmp_path, data):
    from polycl.datasets import labelled_scans
    from polycl.io import label_on_image_grid, read_label, read_volume, select_labels

    root, names = _script().prepare_data("liver", tmp_path)
    assert names == ["example_ct", "example_ct_dicom", "dcmqi_ct_3slice"]
    for scan in labelled_scans("liver"):
        image = read_volume(scan.image)
        written = read_label(root / scan.name / "label.nii.gz")
        assert written.geometry.same_grid_as(image.geometry, written.shape, image.shape)
        assert set(np.unique(written.array)) == {0, 5}  # dcmqi's 0/1 mask speaks TotalSegmentator's id too
        truth = select_labels(label_on_image_grid(read_label(scan.label), image).array, scan.values)
        assert np.array_equal(written.array > 0, truth > 0)  # the y-flipped DICOM label lands on its image
    assert _script().prepare_data("liver", tmp_path)[1] == names  # a second call reuses what is there


def test_outputs_table_csv_and_plot(tmp_path):
    rows = [{"target": "liver", "recipe": r, "scan": s, "mode": m, "dice": d, "hd95_mm": 5.0, "seconds": 1.0,
             "slices": 3, "engine": "", "detail": ""}
            for r, s, m, d in (("starter", "a", "unet", 0.5), ("starter", "b", "unet", 0.7),
                               ("starter", "a", "pipeline", 0.9), ("starter", "b", "pipeline", 0.8))]
    _script().write_outputs(rows, tmp_path, "liver")
    table = (tmp_path / "loso_liver.md").read_text()
    assert "| starter | unet | 0.500 (5; 1 s) | 0.700 (5; 1 s) | 0.600 |" in table
    assert "| starter | pipeline | 0.900 (5; 1 s) | 0.800 (5; 1 s) | 0.850 |" in table
    assert len((tmp_path / "loso_liver.csv").read_text().splitlines()) == 5
    assert (tmp_path / "loso_liver.png").stat().st_size > 5000


def test_fold_atlases_never_use_the_scan_itself(tmp_path, data, monkeypatch):
    from polycl.atlas.store import BUNDLED_NAME, load_atlases

    monkeypatch.setenv("POLYCL_HOME", str(tmp_path / "user"))
    monkeypatch.delenv("POLYCL_BUNDLED_ATLAS", raising=False)
    study = _script()
    with study.fold_atlases(tmp_path, "example_ct", "pipeline prior=on") as names:  # the bundled atlas's scan
        assert names == ["example_ct_dicom"] == [a.name for a in load_atlases()]
        assert load_atlases()[0].organs == {"liver": 5, "spleen": 1}
    with study.fold_atlases(tmp_path, "example_ct_dicom", "pipeline prior=auto") as names:
        assert names == [BUNDLED_NAME] == [a.name for a in load_atlases()]
    with study.fold_atlases(tmp_path, "example_ct", "pipeline") as names:  # modes without the prior
        assert names == []
    assert os.environ["POLYCL_HOME"] == str(tmp_path / "user") and "POLYCL_BUNDLED_ATLAS" not in os.environ


def test_partial_rerun_keeps_older_rows(tmp_path):
    study = _script()
    row = {"target": "liver", "recipe": "starter", "scan": "a", "mode": "unet", "dice": 0.5, "hd95_mm": 5.0,
           "seconds": 1.0, "slices": 3, "engine": "", "detail": ""}
    study.write_outputs([row, dict(row, scan="b", dice=0.7)], tmp_path, "liver")
    new = dict(row, mode="pipeline prior=on", dice=0.9, detail=f"{study.PRIOR_FAILED} (3 slices); ...")
    study.write_outputs([dict(row, dice=0.6), new], tmp_path, "liver")
    with open(tmp_path / "loso_liver.csv", newline="") as f:
        got = [(r["scan"], r["mode"], float(r["dice"])) for r in csv.DictReader(f)]
    assert got == [("a", "unet", 0.6), ("b", "unet", 0.7), ("a", "pipeline prior=on", 0.9)]
    table = (tmp_path / "loso_liver.md").read_text()
    assert "| starter | pipeline prior=on | 0.900 (5; 1 s) * | - | 0.900 |" in table
    assert "no valid atlas" in table
