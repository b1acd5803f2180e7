"""TransUNet encoder: a CNN stem with a transformer bottleneck (PolyCL's "TransUNet" variant).

The first ``len(features) - 1`` levels are residual CNN blocks (MONAI ``UnetResBlock``, InstanceNorm,
LeakyReLU(0.2)) joined by 2x2 max pooling, as in the ResU-Net encoder. At the deepest level the
feature map (N, C, h, w) with C = ``features[-1]`` is flattened into h*w tokens, given a learned
position embedding and passed through ``num_layers`` MONAI ``TransformerBlock`` s (pre-norm
self-attention + MLP), then reshaped back to (N, C, h, w). The position embedding is learned for
an ``img_size`` x ``img_size`` input and bilinearly resized for other input sizes, so one encoder
serves 128- and 256-pixel slices.

Output: feature maps at strides 1, 2, 4, ... with ``channels`` entries, so it plugs into
:class:`~polycl.networks.unet.SegmentationUNet`. ``features[-1]`` must be divisible by ``num_heads``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import TransformerBlock
from torch import nn

from polycl.networks.encoders import DEFAULT_FEATURES
from polycl.networks.resunet import ResUNetEncoder


class TransUNetEncoder(ResUNetEncoder):
    def __init__(self, in_channels: int = 1, features: Sequence[int] = DEFAULT_FEATURES, *, num_layers: int = 4,
                 num_heads: int = 8, mlp_ratio: float = 2.0, dropout_rate: float = 0.0, img_size: int = 256) -> None:
        super().__init__(in_channels, features)
        if len(self.channels) < 2:
            raise ValueError("TransUNet needs at least two levels (CNN stem + transformer bottleneck)")
        hidden = self.channels[-1]
        if hidden % num_heads:
            raise ValueError(f"the bottleneck width {hidden} must be divisible by num_heads={num_heads}")
        self.grid = max(1, int(img_size) // 2 ** (len(self.channels) - 1))
        self.pos_embed = nn.Parameter(torch.zeros(1, hidden, self.grid, self.grid))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.transformer = nn.ModuleList(
            TransformerBlock(hidden, int(hidden * mlp_ratio), num_heads, dropout_rate) for _ in range(int(num_layers))
        )
        self.norm = nn.LayerNorm(hidden)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) deepest features -> the same shape, through the transformer blocks."""
        n, c, h, w = x.shape
        pos = self.pos_embed
        if (h, w) != tuple(pos.shape[-2:]):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        tokens = (x + pos).flatten(2).transpose(1, 2)  # (N, h*w, C)
        for blk in self.transformer:
            tokens = blk(tokens)
        tokens = self.norm(tokens)
        return x + tokens.transpose(1, 2).reshape(n, c, h, w)  # residual around the transformer
