"""The projection head g used only during contrastive pre-training."""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    """Global average pool + one linear layer: (N, C, h, w) -> (N, out_dim) (256 in the paper)."""

    def __init__(self, in_channels: int, out_dim: int = 256) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_channels, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.pool(x), 1))
