"""Segmentation U-Net: a PolyCL encoder + a mirrored decoder with skip connections.

Fine-tuning drops the projection head and adds this decoder. Input (N, 1, H, W) in 0..1;
output (N, out_channels, H, W) logits (one channel: sigmoid gives the organ probability).
"""

from __future__ import annotations

import torch
from monai.networks.blocks import UnetOutBlock, UnetUpBlock
from torch import nn

from polycl.networks.encoders import LEAKY_RELU, build_encoder


class SegmentationUNet(nn.Module):
    def __init__(self, encoder: nn.Module, out_channels: int = 1) -> None:
        super().__init__()
        self.encoder = encoder
        channels = list(encoder.channels)
        self.decoder = nn.ModuleList(
            UnetUpBlock(2, channels[i + 1], channels[i], kernel_size=3, stride=1, upsample_kernel_size=2,
                        norm_name="instance", act_name=LEAKY_RELU)
            for i in reversed(range(len(channels) - 1))
        )
        self.out = UnetOutBlock(2, channels[0], out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        y = features[-1]
        for up, skip in zip(self.decoder, reversed(features[:-1])):
            y = up(y, skip)
        return self.out(y)


def build_segmentation_model(config: dict) -> SegmentationUNet:
    """Build from ``{"encoder": {...encoder config...}, "out_channels": 1}``."""
    return SegmentationUNet(build_encoder(config["encoder"]), int(config.get("out_channels", 1)))
