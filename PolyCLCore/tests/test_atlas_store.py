"""Atlases on disk: the bundled atlas's checksums, `polycl atlas add` / `list` (atomic, with
clear errors on bad input) and the atlas-based targets in `polycl models`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYCL_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_bundled_atlas_is_small_checked_and_labelled():
    from polycl.atlas.store import bundled_atlas, bundled_atlas_dir
    from polycl.hashing import sha256_file

    meta = json.loads((bundled_atlas_dir() / "atlas.json").read_text())
    size = sum((bundled_atlas_dir() / f).stat().st_size for f in meta["files"])
    assert size < 1_000_000
    for fname, sha in meta["files"].items():
        assert sha256_file(bundled_atlas_dir() / fname) == sha
    atlas = bundled_atlas()
    assert set(atlas.organs) == {"spleen", "kidney_right", "kidney_left", "liver"}
    for value in atlas.organs.values():
        assert np.any(atlas.labels.array == value)
    assert "CC BY 4.0" in meta["licence"] and "Wasserthal" in meta["licence"]


def test_atlas_add_list_and_models(ts, home, capsys):
    """A labelled CT becomes a user atlas; it is listed; its organs are atlas-based targets."""
    from polycl.atlas.store import load_atlases
    from polycl.cli.main import main

    assert main(["atlas", "add", str(ts / "example_ct.nii.gz"), str(ts / "example_seg_fast_force_split.nii.gz"),
                 "--name", "mine", "--labels", "spleen=1,liver=5"]) == 0
    meta = json.loads((home / "atlases" / "mine" / "atlas.json").read_text())
    assert meta["labels"] == {"spleen": 1, "liver": 5}
    assert [a.name for a in load_atlases()] == ["totalsegmentator-example", "mine"]
    assert main(["atlas", "list"]) == 0
    assert "mine" in capsys.readouterr().out
    assert main(["models", "--kind", "atlas-based"]) == 0
    out = capsys.readouterr().out
    assert "atlas:spleen" in out and "atlas:kidney" in out and "atlas-based" in out
    # the same name twice is refused, the first stays
    assert main(["atlas", "add", str(ts / "example_ct.nii.gz"), str(ts / "example_seg_fast_force_split.nii.gz"),
                 "--name", "mine"]) == 2
    assert "exists" in capsys.readouterr().err


def test_atlas_add_bad_input_writes_nothing(ts, home, tmp_path, monkeypatch):
    """MR image, 2D image, a label with none of the organs, a bad --labels: clear errors, nothing written;
    a write that fails half-way leaves no atlas and no temporary folder."""
    from polycl.atlas import store
    from polycl.errors import InputError, NotCTError

    seg = ts / "example_seg_fast_force_split.nii.gz"
    with pytest.raises(NotCTError):
        store.add_atlas(ts / "example_mr_sm.nii.gz", ts / "example_seg_mr.nii.gz", name="mr")
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(ts / "example_ct.nii.gz"))[:, :, 50], str(flat))
    with pytest.raises(InputError, match="2D"):
        store.add_atlas(flat, seg, name="flat")
    empty = tmp_path / "empty.nii.gz"
    lab = sitk.ReadImage(str(seg))
    sitk.WriteImage(lab * 0, str(empty))
    with pytest.raises(InputError, match="no labelled voxel"):
        store.add_atlas(ts / "example_ct.nii.gz", empty, name="empty")
    with pytest.raises(InputError, match="none of the labels"):
        store.add_atlas(ts / "example_ct.nii.gz", seg, name="other", labels={"pancreas": 250})
    with pytest.raises(InputError, match="NAME=VALUE"):
        store.parse_labels("liver")

    calls = []

    def failing_write(image, path, useCompression=False):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(image, path, useCompression=useCompression)

    real_write = sitk.WriteImage
    monkeypatch.setattr(store.sitk, "WriteImage", failing_write)
    with pytest.raises(OSError, match="disk full"):
        store.add_atlas(ts / "example_ct.nii.gz", seg, name="half")
    root = home / "atlases"
    assert not root.exists() or list(root.iterdir()) == []
    assert store.user_atlas_names() == []
