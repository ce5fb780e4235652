"""CAM backbone baseline: last encoder feature, a 1x1 conv to class maps, max or avg pooling."""

from __future__ import annotations

import os

from torch import Tensor, nn

from pylon.models.base import ClassMapModel
from pylon.models.encoder import build_encoder
from pylon.models.registry import register_model

POOLS = ("max", "avg")


@register_model("cam")
class CamBackbone(ClassMapModel):
    """Class map at stride 32 from a 1x1 conv (PyTorch's default init, as the reference).

    Args:
        encoder: smp encoder name.
        in_channels: input channels.
        num_classes: classes (maps).
        encoder_weights: ``None``, ``"imagenet"`` or a local encoder state-dict file.
        pool: ``"max"``: logits = max of the map; ``"avg"``: its mean, which equals the 1x1 conv
            of the average-pooled feature (the reference's average-pooling variant).
    """

    min_size = 32
    # the reference's BaselineModel: encoder ``net``, 1x1 conv ``out``
    reference_names = {"net.": "encoder.", "out.": "classifier."}  # noqa: RUF012

    def __init__(
        self,
        encoder: str = "resnet50",
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
        self.encoder = build_encoder(encoder, in_channels=in_channels, weights=encoder_weights)
        self.classifier = nn.Conv2d(self.encoder.out_channels[-1], num_classes, kernel_size=1)

    @property
    def class_head(self) -> nn.Conv2d:
        """The 1x1 convolution that outputs the class map."""
        return self.classifier

    def class_map(self, x: Tensor) -> Tensor:
        """The class map of the checked input ``x``, at stride 32."""
        return self.classifier(self.encoder(x)[-1])
