"""Li et al. 2018 baseline: the last feature resized to a 20x20 patch grid, a conv head to per-patch
class scores, and multiple-instance (MIL) pooling of the patches into the image logit."""

from __future__ import annotations

import os

import torch.nn.functional as F
from torch import Tensor, nn

from pylon.models.checks import check_input
from pylon.models.encoder import build_encoder
from pylon.models.output import ModelOutput
from pylon.models.pooling import mil_logit
from pylon.models.registry import register_model


@register_model("li2018")
class Li2018(nn.Module):
    """``cam`` is the ``(N, C, grid, grid)`` patch scores; ``logits`` their MIL pooling."""

    min_size = 32

    def __init__(
        self,
        encoder_name: str = "resnet50",
        in_channels: int = 1,
        num_classes: int = 14,
        encoder_weights: str | os.PathLike | None = None,
        grid_size: int = 20,
        hidden_channels: int = 512,
        mil_floor: float = 0.98,
    ):
        super().__init__()
        if not 0.0 <= mil_floor < 1.0:
            raise ValueError(f"mil_floor must be in [0, 1), got {mil_floor}")
        self.in_channels = in_channels
        self.grid_size = grid_size
        self.mil_floor = mil_floor
        self.encoder = build_encoder(encoder_name, in_channels=in_channels, weights=encoder_weights)
        self.head = nn.Sequential(
            nn.Conv2d(self.encoder.out_channels[-1], hidden_channels, 3, padding=1),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, num_classes, 1),
        )

    @property
    def class_head(self) -> nn.Conv2d:
        return self.head[-1]

    def forward(self, x: Tensor) -> ModelOutput:
        check_input(x, in_channels=self.in_channels, min_size=self.min_size)
        feature = self.encoder(x)[-1]
        grid = (self.grid_size, self.grid_size)
        feature = F.interpolate(feature, size=grid, mode="bilinear", align_corners=False)
        cam = self.head(feature)
        return ModelOutput(mil_logit(cam, self.mil_floor), cam)
