"""FPN baseline (smp): segmentation blocks with GroupNorm (original) or BatchNorm."""

from __future__ import annotations

import os

import segmentation_models_pytorch as smp
from torch import nn

from pylon.models.registry import register_model
from pylon.models.smp_cam import SmpCam, use_encoder_weights

NORMS = ("groupnorm", "batchnorm")


@register_model("fpn")
def fpn(
    encoder_name: str = "resnet50",
    in_channels: int = 1,
    num_classes: int = 14,
    encoder_weights: str | os.PathLike | None = None,
    norm: str = "groupnorm",
) -> SmpCam:
    """smp FPN; the class map is at 1/4 resolution."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    net = smp.FPN(
        encoder_name,
        encoder_weights=None,
        in_channels=in_channels,
        classes=num_classes,
        upsampling=1,
    )
    if norm == "batchnorm":
        for block in net.decoder.seg_blocks.modules():
            for child_name, child in block.named_children():
                if isinstance(child, nn.GroupNorm):
                    setattr(block, child_name, nn.BatchNorm2d(child.num_channels))
    use_encoder_weights(net, encoder_name, in_channels, encoder_weights)
    return SmpCam(net, in_channels)
