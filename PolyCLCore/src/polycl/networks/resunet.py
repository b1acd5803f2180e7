"""ResU-Net encoder: the U-Net encoder with residual blocks (PolyCL's "ResU-Net" variant).

Each level is MONAI's ``UnetResBlock`` (two 3x3 convolutions with InstanceNorm and LeakyReLU(0.2),
plus a 1x1 projection on the skip path when the channel count changes); levels are joined by 2x2
max pooling. Input (N, in_channels, H, W) with H, W divisible by 2 ** (levels - 1); output a list of
feature maps at strides 1, 2, 4, ... with ``channels`` entries, so it plugs into
:class:`~polycl.networks.unet.SegmentationUNet` like the plain U-Net encoder.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import UnetResBlock
from torch import nn

from polycl.networks.encoders import DEFAULT_FEATURES, LEAKY_RELU


class ResUNetEncoder(nn.Module):
    """Contracting path of a 2D residual U-Net."""

    def __init__(self, in_channels: int = 1, features: Sequence[int] = DEFAULT_FEATURES) -> None:
        super().__init__()
        self.channels = tuple(int(f) for f in features)
        blocks, previous = [], in_channels
        for f in self.channels:
            blocks.append(UnetResBlock(2, previous, f, kernel_size=3, stride=1, norm_name="instance", act_name=LEAKY_RELU))
            previous = f
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            if i:
                x = self.pool(x)
            x = block(x)
            features.append(x)
        return features
