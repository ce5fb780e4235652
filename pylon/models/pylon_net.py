"""PYLON (Preechakul et al. 2022): encoder + pyramid attention + UP decoder; the class map at 1/4
resolution is max-pooled into the image logits."""

from __future__ import annotations

import os

from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.base import initialization as smp_init
from torch import Tensor, nn

from pylon.models.base import ClassMapModel
from pylon.models.encoder import build_encoder
from pylon.models.pylon_decoder import PylonDecoder
from pylon.models.registry import register_model


class PylonCore(nn.Module):
    """Encoder -> decoder -> head conv; returns the raw class map.

    Initialised as the reference's ``SegmentationModel.initialize()``: smp's
    ``initialize_decoder`` (convs Kaiming-uniform fan-in ReLU, zero bias; BatchNorm 1 / 0) and
    ``initialize_head`` (Xavier-uniform, zero bias). The encoder keeps its own weights.
    """

    def __init__(
        self, encoder: nn.Module, decoder: PylonDecoder, num_classes: int, seg_kern_size: int = 1
    ):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.segmentation_head = SegmentationHead(
            decoder.out_channels, num_classes, kernel_size=seg_kern_size
        )
        smp_init.initialize_decoder(self.decoder)
        smp_init.initialize_head(self.segmentation_head)

    def forward(self, x: Tensor) -> Tensor:
        """The raw class map of ``x``."""
        return self.segmentation_head(self.decoder(self.encoder(x)))


@register_model("pylon")
class Pylon(ClassMapModel):
    """PYLON. State-dict names match the released checkpoints (``net.*``).

    Input H and W must be multiples of 32 and at least 256 (the PA block max-pools the stride-32
    map three times; 32 with ``use_pa=False``).

    Args:
        encoder: smp encoder name.
        in_channels: input channels.
        num_classes: classes (maps).
        encoder_weights: ``None``, ``"imagenet"`` or a local encoder state-dict file.
        n_up: number of UP modules (0..3); the map is at stride ``32 / 2**n_up``.
        up_type: ``"2layer"`` (default) or ``"1layer"`` convs in each UP module.
        up_kernel_size: kernel of the UP convs (odd).
        use_pa: use the pyramid attention (else only its 1x1 middle branch).
        n_dec_ch: decoder channels (128).
        seg_kern_size: kernel of the head conv (odd).
    """

    def __init__(
        self,
        encoder: str = "resnet50",
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
        # the attention branch's third max pool leaves one cell per 256 x 256 input pixels
        self.batchnorm_1x1 = (256, "pyramid attention block") if use_pa else None
        backbone = build_encoder(encoder, in_channels=in_channels, weights=encoder_weights)
        decoder = PylonDecoder(
            backbone.out_channels,
            n_dec_ch=n_dec_ch,
            n_up=n_up,
            up_type=up_type,
            up_kernel_size=up_kernel_size,
            use_pa=use_pa,
        )
        self.net = PylonCore(backbone, decoder, num_classes, seg_kern_size)

    @property
    def encoder(self) -> nn.Module:
        """The smp encoder."""
        return self.net.encoder

    @property
    def class_head(self) -> nn.Conv2d:
        """The head convolution, which outputs the class map."""
        return self.net.segmentation_head[0]

    def class_map(self, x: Tensor) -> Tensor:
        """The class map of the checked input ``x``, at stride ``32 / 2**n_up`` (1/4 by default)."""
        return self.net(x)
