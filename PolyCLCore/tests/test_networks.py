"""Network shapes and the checkpoint format (config inside, weights_only loading, strict keys, SHA-256)."""

import pytest
import torch

from polycl.checkpoint import load_segmentation_model, read_checkpoint, save_checkpoint, sha256_file
from polycl.errors import ChecksumError, InputError
from polycl.networks import ProjectionHead, UNetEncoder, build_segmentation_model


def test_encoder_features_and_head():
    enc = UNetEncoder(1, (8, 16, 32, 64))
    feats = enc(torch.rand(2, 1, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 64, 64), (2, 16, 32, 32), (2, 32, 16, 16), (2, 64, 8, 8)]
    assert enc.channels == (8, 16, 32, 64)
    z = ProjectionHead(64, 256)(feats[-1])
    assert z.shape == (2, 256)
    # MultiMix blocks: InstanceNorm and LeakyReLU(0.2)
    kinds = {type(m).__name__ for m in enc.modules()}
    assert "InstanceNorm2d" in kinds and "LeakyReLU" in kinds
    assert all(m.negative_slope == 0.2 for m in enc.modules() if isinstance(m, torch.nn.LeakyReLU))


def test_unet_output_shape():
    model = build_segmentation_model({"encoder": {"name": "unet", "features": [8, 16, 32]}, "out_channels": 1})
    assert model(torch.rand(3, 1, 128, 128)).shape == (3, 1, 128, 128)


def test_checkpoint_round_trip_and_checks(tmp_path):
    config = {"encoder": {"name": "unet", "features": [4, 8]}, "out_channels": 1}
    model = build_segmentation_model(config)
    path = save_checkpoint(tmp_path / "m.pt", model, config, meta={"target": "liver"})
    loaded, ckpt = load_segmentation_model(path, sha256=sha256_file(path))
    assert ckpt["meta"]["target"] == "liver"
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        read_checkpoint(path, sha256="0" * 64)
    with pytest.raises(InputError, match="expected 'encoder'"):
        read_checkpoint(path, kind="encoder")


def test_wrong_architecture_is_refused(tmp_path):
    small = {"encoder": {"name": "unet", "features": [4, 8]}, "out_channels": 1}
    path = save_checkpoint(tmp_path / "m.pt", build_segmentation_model(small), small)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"] = {"encoder": {"name": "unet", "features": [4, 8, 16]}, "out_channels": 1}
    torch.save(ckpt, path)
    with pytest.raises(InputError, match="do not fit"):
        load_segmentation_model(path)


def test_corrupt_checkpoint_is_refused(tmp_path):
    p = tmp_path / "bad.pt"
    p.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(InputError, match="not a readable checkpoint"):
        read_checkpoint(p)
