"""Input validation shared by every model: channel count and spatial size, with clear messages."""

from __future__ import annotations

import torch
from torch import Tensor


def check_input(x: Tensor, *, in_channels: int, multiple: int = 32, min_size: int = 32) -> None:
    """Raise ``ValueError`` unless ``x`` is a valid model input.

    Args:
        x: the input batch; must be ``(N, in_channels, H, W)``.
        in_channels: the channel count the model was built for.
        multiple: H and W must be multiples of it.
        min_size: H and W must be at least this.

    Returns:
        None. Skipped while tracing/exporting (symbolic shapes).
    """
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if x.ndim != 4:
        raise ValueError(
            f"expected a 4-D input (N, {in_channels}, H, W), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"expected {in_channels} input channel(s), got {x.shape[1]} "
            f"(input shape {tuple(x.shape)}); build the model with in_channels={x.shape[1]} "
            "or convert the images"
        )
    height, width = int(x.shape[2]), int(x.shape[3])
    if height % multiple or width % multiple or height < min_size or width < min_size:
        raise ValueError(
            f"input height and width must be multiples of {multiple} and at least {min_size}, "
            f"got {height}x{width}"
        )
