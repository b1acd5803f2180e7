"""The three PolyCL encoders (U-Net, ResU-Net, TransUNet): shapes, strides, registration, and each
one as the contracting half of the segmentation U-Net, including a round trip through an encoder
checkpoint as fine-tuning loads it (config -> build_encoder -> strict weights)."""

from __future__ import annotations

import pytest
import torch

from polycl.checkpoint import load_state_strict, read_checkpoint, save_checkpoint
from polycl.networks import ENCODERS, ProjectionHead, SegmentationUNet, build_encoder

SMALL = (8, 16, 32, 64)


@pytest.mark.parametrize("name", ["unet", "resunet", "transunet"])
def test_encoder_strides_channels_and_segmentation(name, tmp_path):
    torch.manual_seed(0)
    config = {"name": name, "features": list(SMALL)}
    if name == "transunet":
        config.update(num_layers=2, num_heads=4, img_size=64)
    enc = build_encoder(config)
    assert name in ENCODERS
    x = torch.rand(2, 1, 64, 64)
    feats = enc(x)
    assert [f.shape[1] for f in feats] == list(enc.channels) == list(SMALL)
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8]  # strides 1, 2, 4, 8
    z = ProjectionHead(enc.channels[-1], 256)(feats[-1])
    assert z.shape == (2, 256)
    seg = SegmentationUNet(enc, out_channels=1)
    y = seg(x)
    assert y.shape == (2, 1, 64, 64)
    y.mean().backward()  # gradients reach the first encoder block
    assert next(enc.parameters()).grad is not None

    path = save_checkpoint(tmp_path / "enc.pt", enc, config, kind="encoder", meta={"strategy": "s"})
    ckpt = read_checkpoint(path, kind="encoder")
    again = load_state_strict(build_encoder(ckpt["config"]), ckpt["state_dict"])
    with torch.no_grad():
        for a, b in zip(enc.eval()(x), again.eval()(x)):
            torch.testing.assert_close(a, b)


def test_transunet_other_input_size_and_bad_heads():
    enc = build_encoder({"name": "transunet", "features": list(SMALL), "num_layers": 1, "num_heads": 4, "img_size": 64})
    feats = enc(torch.rand(1, 1, 128, 128))  # position embedding resized 8x8 -> 16x16
    assert feats[-1].shape == (1, 64, 16, 16)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        build_encoder({"name": "transunet", "features": [8, 16, 30], "num_heads": 4})


def test_unknown_encoder_is_refused():
    with pytest.raises(ValueError, match="known: resunet, transunet, unet"):
        build_encoder({"name": "vit"})
