"""FPN baseline (smp): segmentation blocks with BatchNorm (the paper's runs) or GroupNorm (smp's
original), decoder dropout 0 as in the reference."""

from __future__ import annotations

import os

import segmentation_models_pytorch as smp
from torch import nn

from pylon.models.registry import register_model
from pylon.models.smp_cam import SmpCam, use_encoder_weights

NORMS = ("batchnorm", "groupnorm")


@register_model("fpn")
def fpn(
    encoder: str = "resnet50",
    in_channels: int = 1,
    num_classes: int = 14,
    encoder_weights: str | os.PathLike | None = None,
    norm: str = "batchnorm",
    dropout: float = 0.0,
) -> SmpCam:
    """smp FPN (pyramid 256, segmentation 128 channels, smp ``initialize()``); class map at 1/4.

    Args:
        encoder: smp encoder name.
        in_channels: input channels.
        num_classes: classes (maps).
        encoder_weights: ``None``, ``"imagenet"`` or a local encoder state-dict file.
        norm: ``"batchnorm"`` (the reference's variant in every paper run) or ``"groupnorm"``
            (smp's original segmentation blocks, GroupNorm(32)).
        dropout: spatial dropout on the merged pyramid (0 in the reference; smp's default 0.2).

    Returns:
        The model.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    net = smp.FPN(
        encoder,
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
        upsampling=1,
        decoder_dropout=dropout,
    )
    if norm == "batchnorm":
        # a fresh BatchNorm has weight 1 and bias 0, as smp's initialize() would set
        for block in net.decoder.seg_blocks.modules():
            for child_name, child in block.named_children():
                if isinstance(child, nn.GroupNorm):
                    setattr(block, child_name, nn.BatchNorm2d(child.num_channels))
    use_encoder_weights(net, encoder, in_channels, encoder_weights)
    return SmpCam(net, in_channels)
