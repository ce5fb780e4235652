"""The one mapping from network-input pixels to original-image pixels (same rounding everywhere:
``Predictor``'s peaks, heatmap pages), and heatmap peaks in original pixels."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pylon.metrics import peak_locations


def input_to_original(coord: Tensor, input_size: int, original_size: int) -> Tensor:
    """Map pixel indices along one axis of the network input back to the original image's axis.

    The input was resized from ``original_size`` to ``input_size`` pixels with pixel centres
    aligned (OpenCV / ``align_corners=False``): centre ``i`` of the input lies at
    ``(i + 0.5) * original / input - 0.5`` in the original; that is rounded to the nearest pixel
    (``torch.round``: halves to even; at a half both neighbours are equally near) and clamped
    into the image.

    Args:
        coord: integer pixel indices (any shape) along the input axis.
        input_size: that axis's length in the network input.
        original_size: the same axis's length in the original image.

    Returns:
        Long tensor of the same shape: the nearest original pixel index.
    """
    if input_size < 1 or original_size < 1:
        raise ValueError(f"sizes must be >= 1, got input {input_size} and original {original_size}")
    scaled = (torch.as_tensor(coord).double() + 0.5) * (original_size / input_size) - 0.5
    return scaled.round().clamp(0, original_size - 1).long()


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(v) for v in size)
    return height, width


def peaks_in_original(
    cams: Tensor,
    input_size: int | Sequence[int],
    original_sizes: Sequence[tuple[int, int]],
) -> list[list[tuple[int, int]]]:
    """Per image, per class ``(x, y)`` of the heatmap peak in that image's original pixels.

    The peak is the metric's (:func:`pylon.metrics.peak_locations`: the arg-max of ``sigmoid``
    of the map up-sampled to the input), mapped by :func:`input_to_original`.

    Args:
        cams: raw class maps ``(N, C, h, w)``.
        input_size: the network input, ``S`` (square) or ``(H, W)``.
        original_sizes: ``(height, width)`` of each of the N original images.

    Returns:
        ``out[i][c] = (x, y)``: column and row of image ``i``'s class ``c`` peak.
    """
    height, width = _pair(input_size)
    if len(original_sizes) != len(cams):
        raise ValueError(f"{len(cams)} maps but {len(original_sizes)} original sizes")
    rows, cols = peak_locations(cams, (height, width))
    out = []
    for i, (orig_height, orig_width) in enumerate(original_sizes):
        ys = input_to_original(rows[i], height, orig_height)
        xs = input_to_original(cols[i], width, orig_width)
        out.append([(int(x), int(y)) for x, y in zip(xs, ys, strict=True)])
    return out


def peak_in_original(
    row: int, col: int, input_size: int | Sequence[int], original_size: Sequence[int]
) -> tuple[int, int]:
    """One peak ``(row, col)`` of the network input as ``(row, col)`` in the original image.

    Args:
        row, col: the peak in input pixels (e.g. ``PairScores.peak_row/peak_col``).
        input_size: the network input, ``S`` or ``(H, W)``.
        original_size: ``(height, width)`` of the original image.

    Returns:
        ``(row, col)`` in original pixels, through :func:`input_to_original`.
    """
    height, width = _pair(input_size)
    orig_height, orig_width = _pair(original_size)
    return (
        int(input_to_original(torch.tensor(row), height, orig_height)),
        int(input_to_original(torch.tensor(col), width, orig_width)),
    )
