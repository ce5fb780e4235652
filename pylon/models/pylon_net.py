"""PYLON (Preechakul et al. 2022): encoder + pyramid attention + UP decoder; the class map at 1/4
resolution is max-pooled into the image logits."""

from __future__ import annotations

import os

from segmentation_models_pytorch.base import SegmentationHead
from torch import Tensor, nn

from pylon.models.checks import check_input
from pylon.models.encoder import build_encoder
from pylon.models.output import ModelOutput
from pylon.models.pooling import global_max_pool
from pylon.models.pylon_decoder import PylonDecoder
from pylon.models.registry import register_model


class PylonCore(nn.Module):
    """Encoder -> decoder -> head conv; returns the raw class map."""

    def __init__(
        self, encoder: nn.Module, decoder: PylonDecoder, num_classes: int, seg_kern_size: int = 1
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.segmentation_head = SegmentationHead(
            decoder.out_channels, num_classes, kernel_size=seg_kern_size
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.segmentation_head(self.decoder(self.encoder(x)))


@register_model("pylon")
class Pylon(nn.Module):
    """PYLON. Input H and W must be multiples of 32 and at least 256 (the PA block pools the
    stride-32 map three times; 32 with ``use_pa=False``). State-dict names match the released
    checkpoints (``net.*``)."""

    def __init__(
        self,
        encoder_name: str = "resnet50",
        in_channels: int = 1,
        num_classes: int = 14,
        encoder_weights: str | os.PathLike | None = None,
        n_up: int = 3,
        up_type: str = "2layer",
        up_kernel_size: int = 1,
        use_pa: bool = True,
        n_dec_ch: int = 128,
        seg_kern_size: int = 1,
    ):
        super().__init__()
        if seg_kern_size < 1 or seg_kern_size % 2 == 0:
            raise ValueError(f"seg_kern_size must be a positive odd integer, got {seg_kern_size}")
        self.in_channels = in_channels
        self.min_size = 256 if use_pa else 32
        encoder = build_encoder(encoder_name, in_channels=in_channels, weights=encoder_weights)
        decoder = PylonDecoder(
            encoder.out_channels,
            n_dec_ch=n_dec_ch,
            n_up=n_up,
            up_type=up_type,
            up_kernel_size=up_kernel_size,
            use_pa=use_pa,
        )
        self.net = PylonCore(encoder, decoder, num_classes, seg_kern_size)

    @property
    def encoder(self) -> nn.Module:
        return self.net.encoder

    @property
    def class_head(self) -> nn.Conv2d:
        return self.net.segmentation_head[0]

    def forward(self, x: Tensor) -> ModelOutput:
        check_input(x, in_channels=self.in_channels, min_size=self.min_size)
        pa_cells = x.shape[0] * (x.shape[2] // 256) * (x.shape[3] // 256)
        if self.training and self.net.decoder.pa.use_attention and pa_cells == 1:
            raise ValueError(
                "PYLON in training mode needs a batch of at least 2 images below 512 px: the PA "
                f"block batch-normalises a 1x1 map there; got input {tuple(x.shape)}"
            )
        cam = self.net(x)
        return ModelOutput(global_max_pool(cam), cam)
