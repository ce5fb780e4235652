"""U-Net baseline (smp), decoder channels (256, 128, 64, 64, 64): a full-resolution class map."""

from __future__ import annotations

import os

import segmentation_models_pytorch as smp

from pylon.models.registry import register_model
from pylon.models.smp_cam import SmpCam, use_encoder_weights


@register_model("unet")
def unet(
    encoder: str = "resnet50",
    in_channels: int = 1,
    num_classes: int = 14,
    encoder_weights: str | os.PathLike | None = None,
    decoder_channels: tuple[int, ...] = (256, 128, 64, 64, 64),
) -> SmpCam:
    """smp Unet (smp ``initialize()``); the class map has the input's resolution.

    Args:
        encoder: smp encoder name.
        in_channels: input channels.
        num_classes: classes (maps).
        encoder_weights: ``None``, ``"imagenet"`` or a local encoder state-dict file.
        decoder_channels: the five decoder blocks' widths (the reference's NIH runs).

    Returns:
        The model.
    """
    net = smp.Unet(
        encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
        decoder_channels=tuple(decoder_channels),
    )
    use_encoder_weights(net, encoder, in_channels, encoder_weights)
    return SmpCam(net, in_channels)
