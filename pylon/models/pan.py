"""PAN baseline (smp), with or without the global-average-pooling branch of its FPA block."""

from __future__ import annotations

import os

import segmentation_models_pytorch as smp
from torch import Tensor, nn

from pylon.models.registry import register_model
from pylon.models.smp_cam import SmpCam, use_encoder_weights

OUTPUT_STRIDE = 16  # smp's default for PAN


class NoGlobalBranch(nn.Module):
    """Stands in for FPA's global-pooling branch: contributes zeros to its sum."""

    def __init__(self, out_channels: int):
        super().__init__()
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.out_channels, 1, 1)


@register_model("pan")
def pan(
    encoder_name: str = "resnet50",
    in_channels: int = 1,
    num_classes: int = 14,
    encoder_weights: str | os.PathLike | None = None,
    gap: bool = True,
) -> SmpCam:
    """smp PAN (output stride 16); class map at 1/4. ``gap=False`` removes the FPA block's
    global-average-pooling branch (the GAU blocks' channel attention is kept)."""
    net = smp.PAN(
        encoder_name,
        encoder_weights=None,
        encoder_output_stride=OUTPUT_STRIDE,
        in_channels=in_channels,
        classes=num_classes,
        upsampling=1,
    )
    if not gap:
        fpa = net.decoder.fpa
        fpa.branch1 = NoGlobalBranch(fpa.mid[0].conv.out_channels)
    use_encoder_weights(net, encoder_name, in_channels, encoder_weights, OUTPUT_STRIDE)
    # FPA max-pools the stride-16 map three times: it must be at least 8x8
    return SmpCam(net, in_channels, min_size=128)
