"""CAM backbone baseline: last encoder feature, a 1x1 conv to class maps, max or avg pooling."""

from __future__ import annotations

import os

import torch.nn.functional as F
from torch import Tensor, nn

from pylon.models.checks import check_input
from pylon.models.encoder import build_encoder
from pylon.models.output import ModelOutput
from pylon.models.pooling import global_max_pool
from pylon.models.registry import register_model

POOLS = ("max", "avg")


@register_model("cam")
class CamBackbone(nn.Module):
    """Class map at stride 32. ``pool="max"``: logits = max of the map. ``pool="avg"``: the same
    1x1 conv applied to the average-pooled feature (equal to the mean of the map)."""

    min_size = 32

    def __init__(
        self,
        encoder_name: str = "resnet50",
        in_channels: int = 1,
        num_classes: int = 14,
        encoder_weights: str | os.PathLike | None = None,
        pool: str = "max",
    ):
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.in_channels = in_channels
        self.pool = pool
        self.encoder = build_encoder(encoder_name, in_channels=in_channels, weights=encoder_weights)
        self.classifier = nn.Conv2d(self.encoder.out_channels[-1], num_classes, kernel_size=1)

    @property
    def class_head(self) -> nn.Conv2d:
        return self.classifier

    def forward(self, x: Tensor) -> ModelOutput:
        check_input(x, in_channels=self.in_channels, min_size=self.min_size)
        feature = self.encoder(x)[-1]
        cam = self.classifier(feature)
        if self.pool == "max":
            logits = global_max_pool(cam)
        else:
            logits = self.classifier(F.adaptive_avg_pool2d(feature, 1)).flatten(1)
        return ModelOutput(logits, cam)
