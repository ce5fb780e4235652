"""PYLON decoder: pyramid attention on the stride-32 feature, then up to three UP modules that add
convolved encoder skips (1/16, 1/8, 1/4) to the bilinearly up-sampled decoder map."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from pylon.models.blocks import ConvBnRelu
from pylon.models.pyramid_attention import PyramidAttention

UP_TYPES = ("1layer", "2layer")


class UpBlock(nn.Module):
    """``out = bilinear_up(y, size of skip) + conv(skip)``."""

    def __init__(
        self, skip_channels: int, out_channels: int, up_type: str = "2layer", kernel_size: int = 1
    ):
        super().__init__()
        if up_type == "1layer":
            self.conv1 = ConvBnRelu(skip_channels, out_channels, kernel_size)
        elif up_type == "2layer":
            self.conv1 = nn.Sequential(
                ConvBnRelu(skip_channels, skip_channels, kernel_size),
                ConvBnRelu(skip_channels, out_channels, kernel_size),
            )
        else:
            raise ValueError(f"up_type must be one of {UP_TYPES}, got {up_type!r}")

    def forward(self, skip: Tensor, y: Tensor) -> Tensor:
        """Return ``y`` (decoder map) up-sampled to the size of ``skip`` (encoder feature) plus
        the convolved ``skip``."""
        y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return y + self.conv1(skip)


class PylonDecoder(nn.Module):
    """Maps encoder features (strides 1..32) to an ``n_dec_ch`` map at stride ``32 / 2**n_up``."""

    def __init__(
        self,
        encoder_channels: Sequence[int],
        n_dec_ch: int = 128,
        n_up: int = 3,
        up_type: str = "2layer",
        up_kernel_size: int = 1,
        use_pa: bool = True,
    ):
        super().__init__()
        if n_up not in (0, 1, 2, 3):
            raise ValueError(f"n_up must be 0, 1, 2 or 3, got {n_up!r}")
        if up_type not in UP_TYPES:
            raise ValueError(f"up_type must be one of {UP_TYPES}, got {up_type!r}")
        if up_kernel_size < 1 or up_kernel_size % 2 == 0:
            raise ValueError(f"up_kernel_size must be a positive odd integer, got {up_kernel_size}")
        self.n_up = n_up
        self.out_channels = n_dec_ch
        self.pa = PyramidAttention(encoder_channels[-1], n_dec_ch, use_attention=use_pa)
        # names up3/up2/up1 (1/16, 1/8, 1/4) follow the released checkpoints
        for i, name in enumerate(("up3", "up2", "up1")[:n_up]):
            skip = encoder_channels[-2 - i]
            self.add_module(name, UpBlock(skip, n_dec_ch, up_type, up_kernel_size))

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        """Return the decoder map of the encoder ``features`` (strides 1..32, smp order)."""
        x = self.pa(features[-1])
        for i, name in enumerate(("up3", "up2", "up1")[: self.n_up]):
            x = getattr(self, name)(features[-2 - i], x)
        return x
