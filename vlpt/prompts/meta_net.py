"""CoCoOp's meta-net: an image feature -> a bias added to every context token.

Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022:
a two-layer bottleneck MLP (Linear-ReLU-Linear, hidden = input/16).
"""
from __future__ import annotations

from torch import nn


class MetaNet(nn.Sequential):
    """Linear(d_in, d_in // 16) - ReLU - Linear(d_in // 16, d_out)."""

    def __init__(self, d_in: int, d_out: int, reduction: int = 16):
        hidden = max(1, d_in // reduction)
        super().__init__(nn.Linear(d_in, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, d_out))
