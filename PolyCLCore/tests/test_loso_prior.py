"""The leave-one-scan-out study with the atlas prior (issue 19, ``scripts/loso_study.py``): a fold
never uses its own scan as the atlas, and a partial rerun keeps the older rows of the outputs."""

import csv
import importlib.util
import os
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "loso_study.py"


def _script():
    spec = importlib.util.spec_from_file_location("loso_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
