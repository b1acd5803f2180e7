"""The bundled model registry: every file registered, every checksum right, tampering refused."""

import json
import shutil

import pytest

from polycl.checkpoint import read_checkpoint, sha256_file
from polycl.errors import ChecksumError
from polycl.inference import load_model
from polycl.models import DEFAULT_MODEL, bundled_dir, list_models, resolve_model


def test_every_bundled_file_is_registered_with_the_right_sha256():
    registry = json.loads((bundled_dir() / "registry.json").read_text())["models"]
    registered = {m["file"] for m in registry}
    on_disk = {p.name for p in bundled_dir().glob("*.pt")}
    assert registered == on_disk
    for m in registry:
        path = bundled_dir() / m["file"]
        assert sha256_file(path) == m["sha256"], m["name"]
        assert (bundled_dir() / m["card"]).is_file(), m["name"]
        assert path.stat().st_size < 15 * 2**20  # small enough to commit
        assert read_checkpoint(path, kind=m["kind"])["kind"] == m["kind"]


def test_default_model_is_the_liver_model():
    entry = resolve_model(None)
    assert entry.name == DEFAULT_MODEL and entry.target == "liver" and entry.source == "bundled"
    assert {"segmentation", "encoder"} <= {m.kind for m in list_models()}


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    """A user model whose file no longer matches its registered SHA-256 is not loaded."""
    monkeypatch.setenv("POLYCL_HOME", str(tmp_path))
    folder = tmp_path / "models" / "tampered"
    folder.mkdir(parents=True)
    original = resolve_model(None)
    shutil.copyfile(original.path, folder / "model.pt")
    (folder / "model.json").write_text(json.dumps({"name": "tampered", "kind": "segmentation", "target": "liver",
                                                   "sha256": original.sha256}))
    assert load_model("tampered", "cpu").entry.name == "tampered"  # intact: loads
    data = bytearray((folder / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.pt").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        load_model("tampered", "cpu")
