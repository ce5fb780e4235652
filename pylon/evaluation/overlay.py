"""The one heatmap-on-image overlay of evaluation, prediction and the viewer: the drawing
primitives live in :mod:`pylon.overlay_draw` (a low module, so training draws with the same colour
map) and are re-exported here; this module adds the peak overlay and PNG writing."""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np

from pylon.io import atomic_path
from pylon.overlay_draw import (  # noqa: F401  (re-exported: the one place to draw overlays)
    DISPLAY_MAX_SIDE,
    STYLE_TITLES,
    STYLES,
    display_scale,
    draw_peak,
    fit_display,
    image_to_rgb,
    overlay_image,
    peak_radius,
    reference_overlay,
    resize_heatmap,
)


def peak_overlay(
    pixels: np.ndarray,
    heatmap: np.ndarray,
    peak: tuple[int, int],
    *,
    style: str = "probability",
    max_side: int | None = DISPLAY_MAX_SIDE,
    boxes: Sequence[Sequence[float]] = (),
    alpha: float = 0.5,
) -> np.ndarray:
    """:func:`overlay_image` with a white ring at the heatmap's peak (``pylon predict``, the
    viewer).

    Predictions default to absolute probabilities: rescaled per image, a map that is 1 % likely
    everywhere would look as hot as a confident finding.

    Args:
        pixels: the original image.
        heatmap: the class's map in [0, 1] (any resolution).
        peak: ``(x, y)`` in the original image's pixels.
        style: the overlay style (:data:`STYLES`).
        max_side: the display bound (see :func:`overlay_image`).
        boxes: ground-truth ``(x, y, w, h, ...)`` in the original image's pixels (green).
        alpha: the heatmap's weight (the opacity).

    Returns:
        uint8 RGB array at the display size.
    """
    rgb = overlay_image(pixels, heatmap, boxes=boxes, alpha=alpha, style=style, max_side=max_side)
    scale = display_scale(np.shape(pixels), max_side)
    return draw_peak(rgb, (peak[0] * scale, peak[1] * scale))


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image as PNG, atomically.

    Args:
        path: the target file.
        rgb: uint8 ``(H, W, 3)`` RGB array.

    Returns:
        None.

    Raises:
        ValueError: when OpenCV cannot encode the array.
    """
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"PNG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
