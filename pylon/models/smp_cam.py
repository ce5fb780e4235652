"""Wrap an smp segmentation model as a weakly supervised classifier: its head's map is the CAM and
global max pooling of that map gives the logits."""

from __future__ import annotations

import os

from segmentation_models_pytorch.base import SegmentationModel
from torch import Tensor, nn

from pylon.models.base import ClassMapModel
from pylon.models.encoder import build_encoder


class SmpCam(ClassMapModel):
    """An smp model (built with ``upsampling=1`` and no activation) as a :class:`ClassMapModel`.

    Args:
        net: the smp model; its state-dict names (``net.*``) are those of the reference's
            baselines, which wrap smp models the same way.
        in_channels: input channels.
        min_size: smallest input height/width.
        batchnorm_1x1: see :class:`ClassMapModel`.
    """

    def __init__(
        self,
        net: SegmentationModel,
        in_channels: int,
        *,
        min_size: int = 32,
        batchnorm_1x1: tuple[int, str] | None = None,
    ):
        super().__init__()
        self.net = net
        self.in_channels = in_channels
        self.min_size = min_size
        self.batchnorm_1x1 = batchnorm_1x1

    @property
    def encoder(self) -> nn.Module:
        """The smp encoder."""
        return self.net.encoder

    @property
    def class_head(self) -> nn.Conv2d:
        """The segmentation head's convolution, which outputs the class map."""
        return self.net.segmentation_head[0]

    def class_map(self, x: Tensor) -> Tensor:
        """The segmentation head's output (smp's own forward is bypassed: its shape check would
        raise a RuntimeError where :meth:`check_input` gives the documented ValueError)."""
        return self.net.segmentation_head(self.net.decoder(self.net.encoder(x)))


def use_encoder_weights(
    net: SegmentationModel,
    encoder: str,
    in_channels: int,
    weights: str | os.PathLike | None,
    output_stride: int = 32,
) -> None:
    """Replace ``net.encoder`` (built without weights) by one with ``weights``.

    Args:
        net: the smp model, changed in place.
        encoder: smp encoder name.
        in_channels: input channels.
        weights: ``None`` (keep the random encoder), ``"imagenet"`` or a local file
            (see :func:`~pylon.models.encoder.build_encoder`).
        output_stride: the encoder's output stride (16 = last stage dilated).

    Returns:
        None.
    """
    if weights is not None:
        net.encoder = build_encoder(
            encoder, in_channels=in_channels, weights=weights, output_stride=output_stride
        )
