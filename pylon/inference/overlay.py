"""Heatmap overlay PNGs at the original image's resolution, with the peak marked."""

from __future__ import annotations

import os

import cv2
import numpy as np
from matplotlib import colormaps

from pylon.io import atomic_path


def overlay_heatmap(
    pixels: np.ndarray,
    heatmap: np.ndarray,
    peak: tuple[int, int] | None = None,
    *,
    alpha: float = 0.45,
    cmap: str = "jet",
) -> np.ndarray:
    """Blend a [0, 1] ``heatmap`` (H, W) over a uint8 image (H, W[, 1|3]); returns uint8 RGB.

    ``peak`` ``(x, y)`` is marked with a white ring.
    """
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.shape[:2] != heatmap.shape:
        raise ValueError(f"image {pixels.shape[:2]} and heatmap {heatmap.shape} sizes differ")
    rgb = np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels[:, :, :3]
    colours = colormaps[cmap](np.clip(heatmap, 0.0, 1.0))[:, :, :3] * 255.0
    blended = np.rint((1.0 - alpha) * rgb + alpha * colours).astype(np.uint8)
    if peak is not None:
        radius = max(3, round(min(heatmap.shape) / 40))
        cv2.circle(blended, tuple(int(v) for v in peak), radius, (255, 255, 255), 2)
    return blended


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image as PNG, atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"PNG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
