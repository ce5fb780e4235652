"""Conv-BatchNorm-ReLU, the building block of the PYLON decoder.

Defined here rather than borrowed from smp because its attribute names (``conv``, ``bn``) are
part of the released checkpoints' state-dict contract.
"""

from __future__ import annotations

from torch import Tensor, nn


class ConvBnRelu(nn.Module):
    """``relu(bn(conv(x)))`` with a biased conv and "same" padding for odd kernels."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``relu(bn(conv(x)))``."""
        return self.relu(self.bn(self.conv(x)))
