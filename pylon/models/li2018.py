"""Li et al. 2018 baseline: the last feature resized to a 20x20 patch grid, a conv head to per-patch
class scores, and multiple-instance (MIL) pooling of the patches into the image logit."""

from __future__ import annotations

import os

import torch.nn.functional as F
from torch import Tensor, nn

from pylon.models.base import ClassMapModel
from pylon.models.encoder import build_encoder
from pylon.models.registry import register_model

POOLS = ("mil", "max")


@register_model("li2018")
class Li2018(ClassMapModel):
    """``cam`` is the ``(N, C, grid, grid)`` patch scores; ``logits`` their MIL pooling.

    The last feature is resized to ``grid_size`` with bilinear interpolation, align_corners=True
    (the reference's ``nn.UpsamplingBilinear2d``); the head keeps PyTorch's default init.

    Args:
        encoder: smp encoder name.
        in_channels: input channels.
        num_classes: classes (maps).
        encoder_weights: ``None``, ``"imagenet"`` or a local encoder state-dict file.
        grid_size: side of the patch grid (20).
        hidden_channels: channels of the 3x3 conv (512).
        mil_floor: floor of the MIL pooling (0.98), in [0, 1).
        pool: ``"mil"`` (the paper) or ``"max"`` (the reference's max-pooling variant).
    """

    min_size = 32
    # the reference's Li2018: encoder ``net``; ``out`` = [upsample, conv, BN, ReLU, conv]
    reference_names = {  # noqa: RUF012
        "net.": "encoder.",
        "out.1.": "head.0.",
        "out.2.": "head.1.",
        "out.4.": "head.3.",
    }

    def __init__(
        self,
        encoder: str = "resnet50",
        in_channels: int = 1,
        num_classes: int = 14,
        encoder_weights: str | os.PathLike | None = None,
        grid_size: int = 20,
        hidden_channels: int = 512,
        mil_floor: float = 0.98,
        pool: str = "mil",
    ):
        super().__init__()
        if not 0.0 <= mil_floor < 1.0:
            raise ValueError(f"mil_floor must be in [0, 1), got {mil_floor}")
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.in_channels = in_channels
        self.grid_size = grid_size
        self.mil_floor = mil_floor
        self.pool = pool
        self.encoder = build_encoder(encoder, in_channels=in_channels, weights=encoder_weights)
        self.head = nn.Sequential(
            nn.Conv2d(self.encoder.out_channels[-1], hidden_channels, 3, padding=1),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, num_classes, 1),
        )

    @property
    def class_head(self) -> nn.Conv2d:
        """The last 1x1 convolution, which outputs the patch scores."""
        return self.head[-1]

    def class_map(self, x: Tensor) -> Tensor:
        """The ``grid_size`` x ``grid_size`` patch scores."""
        feature = self.encoder(x)[-1]
        grid = (self.grid_size, self.grid_size)
        feature = F.interpolate(feature, size=grid, mode="bilinear", align_corners=True)
        return self.head(feature)
