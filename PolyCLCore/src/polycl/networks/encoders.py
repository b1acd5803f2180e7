"""PolyCL encoders f. Input (N, in_channels, H, W); output feature maps at strides 1, 2, 4, ...

The U-Net encoder follows MultiMix: each level is two 3x3 convolutions, each followed by
InstanceNorm and LeakyReLU(0.2) (MONAI's ``UnetBasicBlock``), and levels are joined by 2x2 max
pooling. H and W must be divisible by 2 ** (levels - 1).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from monai.networks.blocks import UnetBasicBlock
from torch import nn

LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.2, "inplace": True})
DEFAULT_FEATURES = (16, 32, 64, 128, 256)


class UNetEncoder(nn.Module):
    """Contracting path of a 2D U-Net (MultiMix style).

    Subclasses change the level block (``block``, a MONAI block class with UnetBasicBlock's
    signature) and/or transform the deepest feature map (:meth:`bottleneck`).
    """

    block: type[nn.Module] = UnetBasicBlock

    def __init__(self, in_channels: int = 1, features: Sequence[int] = DEFAULT_FEATURES) -> None:
        super().__init__()
        self.channels = tuple(int(f) for f in features)
        blocks, previous = [], in_channels
        for f in self.channels:
            blocks.append(self.block(2, previous, f, kernel_size=3, stride=1, norm_name="instance", act_name=LEAKY_RELU))
            previous = f
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """Applied to the deepest feature map; identity for the plain U-Net."""
        return x

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for i, block in enumerate(self.blocks):
            if i:
                x = self.pool(x)
            x = block(x)
            if i == len(self.blocks) - 1:
                x = self.bottleneck(x)
            features.append(x)
        return features


#: name -> constructor(in_channels=..., features=..., **extra). Other encoders register here.
ENCODERS: dict[str, Callable[..., nn.Module]] = {"unet": UNetEncoder}


def _lazy(module: str, cls: str) -> Callable[..., nn.Module]:
    def make(**kwargs) -> nn.Module:
        import importlib
        return getattr(importlib.import_module(module), cls)(**kwargs)
    return make


ENCODERS["resunet"] = _lazy("polycl.networks.resunet", "ResUNetEncoder")
ENCODERS["transunet"] = _lazy("polycl.networks.transunet", "TransUNetEncoder")


def build_encoder(config: dict) -> nn.Module:
    """Build an encoder from ``{"name": "unet", "in_channels": 1, "features": [...], ...}``."""
    cfg = dict(config)
    name = cfg.pop("name", "unet")
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder '{name}'; known: {', '.join(sorted(ENCODERS))}")
    if "features" in cfg:
        cfg["features"] = tuple(cfg["features"])
    return ENCODERS[name](**cfg)
