"""PYLON's pyramid attention (PA) block on the stride-32 feature: a 1x1 "middle" branch gated by a
three-level spatial attention map (FPA of PAN without its global-pooling branch)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from pylon.models.blocks import ConvBnRelu


def _upsample_to(x: Tensor, like: Tensor) -> Tensor:
    # to the skip's size, not by a factor 2, so any multiple-of-32 input works
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class PyramidAttention(nn.Module):
    """``out = attention(x) * mid(x)``; with ``use_attention=False`` only ``mid(x)``.

    The attention branch max-pools the input three times, so ``x`` must be at least 8x8.
    """

    def __init__(self, in_channels: int, out_channels: int = 128, use_attention: bool = True):
        super().__init__()
        self.use_attention = use_attention
        self.mid = nn.Sequential(ConvBnRelu(in_channels, out_channels, 1))
        if use_attention:
            self.down1 = nn.Sequential(nn.MaxPool2d(2), ConvBnRelu(in_channels, 1, 7))
            self.down2 = nn.Sequential(nn.MaxPool2d(2), ConvBnRelu(1, 1, 5))
            self.down3 = nn.Sequential(nn.MaxPool2d(2), ConvBnRelu(1, 1, 3))
            self.conv3 = ConvBnRelu(1, 1, 3)
            self.conv2 = ConvBnRelu(1, 1, 5)
            self.conv1 = ConvBnRelu(1, 1, 7)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``attention(x) * mid(x)`` (or ``mid(x)``) for the stride-32 feature ``x``."""
        mid = self.mid(x)
        if not self.use_attention:
            return mid
        x1 = self.down1(x)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        a = _upsample_to(self.conv3(x3), x2)
        a = _upsample_to(self.conv2(x2) + a, x1)
        a = _upsample_to(self.conv1(x1) + a, x)
        return a * mid
