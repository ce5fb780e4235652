"""DeepLabV3+ baseline (smp), with or without the ASPP global-average-pooling branch."""

from __future__ import annotations

import os

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPPooling
from torch import nn

from pylon.models.registry import register_model
from pylon.models.smp_cam import SmpCam, use_encoder_weights

OUTPUT_STRIDE = 16  # smp's default for DeepLabV3+


@register_model("deeplabv3plus")
def deeplabv3plus(
    encoder_name: str = "resnet50",
    in_channels: int = 1,
    num_classes: int = 14,
    encoder_weights: str | os.PathLike | None = None,
    aspp_pooling: bool = True,
) -> SmpCam:
    """smp DeepLabV3Plus (output stride 16); class map at 1/4. ``aspp_pooling=False`` drops the
    ASPP image-pooling branch and narrows the projection conv to the remaining four branches."""
    net = smp.DeepLabV3Plus(
        encoder_name,
        encoder_weights=None,
        encoder_output_stride=OUTPUT_STRIDE,
        in_channels=in_channels,
        classes=num_classes,
        upsampling=1,
    )
    if not aspp_pooling:
        aspp = net.decoder.aspp[0]
        aspp.convs = nn.ModuleList(m for m in aspp.convs if not isinstance(m, ASPPPooling))
        project = aspp.project[0]
        aspp.project[0] = nn.Conv2d(
            project.out_channels * len(aspp.convs), project.out_channels, 1, bias=False
        )
    use_encoder_weights(net, encoder_name, in_channels, encoder_weights, OUTPUT_STRIDE)
    return SmpCam(net, in_channels)
