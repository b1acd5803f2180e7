"""ResU-Net encoder: the U-Net encoder with residual blocks (PolyCL's "ResU-Net" variant).

Each level is MONAI's ``UnetResBlock`` (two 3x3 convolutions with InstanceNorm and LeakyReLU(0.2),
plus a 1x1 projection on the skip path when the channel count changes); levels are joined by 2x2
max pooling. Input (N, in_channels, H, W) with H, W divisible by 2 ** (levels - 1); output a list of
feature maps at strides 1, 2, 4, ... with ``channels`` entries, so it plugs into
:class:`~polycl.networks.unet.SegmentationUNet` like the plain U-Net encoder.
"""

from __future__ import annotations

from monai.networks.blocks import UnetResBlock

from polycl.networks.encoders import UNetEncoder


class ResUNetEncoder(UNetEncoder):
    """Contracting path of a 2D residual U-Net: the U-Net encoder with MONAI's ``UnetResBlock``."""

    block = UnetResBlock
