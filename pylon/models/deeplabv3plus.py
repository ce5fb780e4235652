"""DeepLabV3+ baseline (smp), with or without the ASPP global-average-pooling branch."""

from __future__ import annotations

import os

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPPPooling
from torch import nn

from pylon.models.registry import register_model
from pylon.models.smp_cam import SmpCam, use_encoder_weights

OUTPUT_STRIDE = 16  # smp's default for DeepLabV3+, as the reference


@register_model("deeplabv3plus")
def deeplabv3plus(
    encoder: str = "resnet50",
    in_channels: int = 1,
    num_classes: int = 14,
    encoder_weights: str | os.PathLike | None = None,
    aspp_pooling: bool = True,
) -> SmpCam:
    """smp DeepLabV3Plus (256 channels, output stride 16, rates 12/24/36); class map at 1/4.

    Args:
        encoder: smp encoder name.
        in_channels: input channels.
        num_classes: classes (maps).
        encoder_weights: ``None``, ``"imagenet"`` or a local encoder state-dict file.
        aspp_pooling: ``False`` drops the ASPP image-pooling branch and narrows the projection
            conv to the remaining four branches (the reference's "no GAP" model).

    Returns:
        The model. Its decoder and head keep PyTorch's default init: smp's DeepLabV3Plus does not
        call ``initialize()`` (neither in the version the reference used nor now), nor does the
        reference's no-GAP variant.
    """
    net = smp.DeepLabV3Plus(
        encoder,
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
    use_encoder_weights(net, encoder, in_channels, encoder_weights, OUTPUT_STRIDE)
    batchnorm_1x1 = (0, "ASPP image-pooling branch") if aspp_pooling else None
    return SmpCam(net, in_channels, batchnorm_1x1=batchnorm_1x1)
