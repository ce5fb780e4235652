"""PAN baseline (smp) as the reference builds it: 128 decoder channels, an undilated encoder
(output stride 32); "no GAP" removes both the FPA global-pooling branch and the GAU attention."""

from __future__ import annotations

import os

import segmentation_models_pytorch as smp
from torch import Tensor, nn

from pylon.models.registry import register_model
from pylon.models.smp_cam import SmpCam, use_encoder_weights

OUTPUT_STRIDES = (32, 16)


class NoGlobalBranch(nn.Module):
    """Stands in for FPA's global-pooling branch: adds zeros, so FPA = attention * middle."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        """Return zeros ``(N, out_channels, 1, 1)`` for the FPA input ``x``."""
        return x.new_zeros(x.shape[0], self.out_channels, 1, 1)


class NoChannelAttention(nn.Module):
    """Stands in for a GAU block's global-pooling channel attention: multiplies by ones, so
    GAU = up(high-level) + conv(low-level)."""

    def forward(self, y: Tensor) -> Tensor:
        """Return ones ``(N, C, 1, 1)`` for the high-level feature ``y`` ``(N, C, h, w)``."""
        return y.new_ones(y.shape[0], y.shape[1], 1, 1)


@register_model("pan")
def pan(
    encoder: str = "resnet50",
    in_channels: int = 1,
    num_classes: int = 14,
    encoder_weights: str | os.PathLike | None = None,
    gap: bool = True,
    decoder_channels: int = 128,
    output_stride: int = 32,
) -> SmpCam:
    """smp PAN (smp ``initialize()``); class map at 1/4.

    Args:
        encoder: smp encoder name.
        in_channels: input channels.
        num_classes: classes (maps).
        encoder_weights: ``None``, ``"imagenet"`` or a local encoder state-dict file.
        gap: ``False`` removes the FPA block's global-pooling branch and every GAU block's
            global-pooling channel attention (the reference's ``use_gap=False``).
        decoder_channels: decoder width (128 in the reference; smp's default 32).
        output_stride: 32 (undilated encoder, the reference) or 16 (smp's default, last stage
            dilated).

    Returns:
        The model. FPA max-pools the encoder's last map three times, so inputs must be at
        least ``8 * output_stride`` px (256 by default).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    if decoder_channels < 1:
        raise ValueError(f"decoder_channels must be >= 1, got {decoder_channels}")
    net = smp.PAN(
        encoder,
        encoder_weights=None,
        encoder_output_stride=output_stride,
        decoder_channels=decoder_channels,
        in_channels=in_channels,
        classes=num_classes,
        upsampling=1,
    )
    if gap:
        batchnorm_1x1 = (0, "global-pooling branches (FPA, GAU)")
    else:
        net.decoder.fpa.branch1 = NoGlobalBranch(decoder_channels)
        for name in ("gau3", "gau2", "gau1"):
            getattr(net.decoder, name).conv1 = NoChannelAttention()
        batchnorm_1x1 = (8 * output_stride, "FPA block")
    use_encoder_weights(net, encoder, in_channels, encoder_weights, output_stride)
    return SmpCam(net, in_channels, min_size=8 * output_stride, batchnorm_1x1=batchnorm_1x1)
