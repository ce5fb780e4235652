"""Wrap an smp segmentation model as a weakly supervised classifier: its head's map is the CAM and
global max pooling of that map gives the logits."""

from __future__ import annotations

import os

from segmentation_models_pytorch.base import SegmentationModel
from torch import Tensor, nn

from pylon.models.checks import check_input
from pylon.models.encoder import build_encoder
from pylon.models.output import ModelOutput
from pylon.models.pooling import global_max_pool


class SmpCam(nn.Module):
    """``net`` is an smp model built with ``upsampling=1`` and no activation."""

    def __init__(self, net: SegmentationModel, in_channels: int, min_size: int = 32):
        super().__init__()
        self.net = net
        self.in_channels = in_channels
        self.min_size = min_size

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    @property
    def class_head(self) -> nn.Conv2d:
        return self.net.segmentation_head[0]

    def forward(self, x: Tensor) -> ModelOutput:
        # smp's own forward would raise a RuntimeError; check_input gives the documented ValueError
        check_input(x, in_channels=self.in_channels, min_size=self.min_size)
        cam = self.net.segmentation_head(self.net.decoder(self.net.encoder(x)))
        return ModelOutput(global_max_pool(cam), cam)


def use_encoder_weights(
    net: SegmentationModel,
    encoder_name: str,
    in_channels: int,
    weights: str | os.PathLike | None,
    output_stride: int = 32,
) -> None:
    """Replace ``net.encoder`` (built without weights) by one with ``weights`` (build_encoder)."""
    if weights is not None:
        net.encoder = build_encoder(
            encoder_name, in_channels=in_channels, weights=weights, output_stride=output_stride
        )
