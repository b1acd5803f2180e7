"""SAM checkpoint registry and model loading: the bundled LiteMedSAM file is verified before use,
loads strictly into segment_anything's Sam, and wrong/corrupt files are refused. No downloads."""

from __future__ import annotations

import re
import shutil

import pytest

from polycl.errors import ChecksumError, InputError
from polycl.sam import weights


def test_registry_entries_are_well_formed():
    assert weights.BACKENDS[0] == "litemedsam"
    for entry in weights.SAM_CHECKPOINTS.values():
        assert entry.arch in ("litemedsam", "vit_b", "vit_l", "vit_h") and entry.normalise in ("sam", "unit")
        if entry.url:
            assert entry.url.startswith("https://dl.fbaipublicfiles.com/segment_anything/")
            assert entry.url.endswith(entry.filename) and entry.size
        if entry.sha256:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    # pinned here too, so an accidental edit of the registry shows up in review
    assert weights.SAM_CHECKPOINTS["sam_vit_b"].sha256.startswith("ec2df627")
    assert weights.SAM_CHECKPOINTS["medsam_vit_b"].sha256 is None  # no verifiable published hash


def test_bundled_litemedsam_is_verified(tmp_path):
    path = weights.checkpoint_path("litemedsam")
    assert path.name == "lite_medsam.pth" and path.stat().st_size == weights.LITEMEDSAM_SIZE
    # a corrupted copy given as the checkpoint is refused by its SHA-256
    bad = tmp_path / "lite_medsam.pth"
    shutil.copyfile(path, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ChecksumError, match="SHA-256"):
        weights.checkpoint_path("litemedsam", path=bad)


def test_missing_and_manual_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYCL_CACHE", str(tmp_path))
    with pytest.raises(InputError, match="not downloaded yet"):
        weights.checkpoint_path("sam_vit_h", download=False)
    with pytest.raises(InputError, match="by hand|download"):
        weights.checkpoint_path("medsam_vit_b")
    with pytest.raises(InputError, match="unknown SAM backend"):
        weights.checkpoint_path("sam_vit_x")
    with pytest.raises(InputError, match="not found"):
        weights.checkpoint_path("sam_vit_b", path=tmp_path / "nope.pth")
    assert not any(tmp_path.iterdir())  # nothing was fetched or written


def test_litemedsam_loads_strictly_into_sam():
    from segment_anything.modeling import Sam

    from polycl.sam import load_sam

    loaded = load_sam("litemedsam", device="cpu")
    assert isinstance(loaded.model, Sam) and loaded.image_size == 256
    assert loaded.sha256 == weights.LITEMEDSAM_SHA256
    assert loaded.model.pixel_std.flatten().tolist() == [255.0, 255.0, 255.0]
    assert not loaded.model.training
    assert load_sam("litemedsam", device="cpu") is loaded  # cached per process


def test_wrong_weights_are_refused(tmp_path):
    """LiteMedSAM's file given as a MedSAM ViT-B checkpoint (no registered hash): strict keys refuse it."""
    from polycl.sam import load_sam

    with pytest.raises(InputError, match="do not fit"):
        load_sam("medsam_vit_b", device="cpu", checkpoint=weights.checkpoint_path("litemedsam"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable"):
        load_sam("medsam_vit_b", device="cpu", checkpoint=junk)
