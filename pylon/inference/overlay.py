"""Overlay PNGs for predictions: the heatmap over the original image with its peak marked."""

from __future__ import annotations

import os

import cv2
import numpy as np

from pylon.evaluation.overlay import overlay_image
from pylon.io import atomic_path


def peak_overlay(pixels: np.ndarray, heatmap: np.ndarray, peak: tuple[int, int]) -> np.ndarray:
    """``overlay_image`` of a [0, 1] heatmap at the image's resolution, with a white ring at the
    peak ``(x, y)``; uint8 RGB."""
    rgb = overlay_image(pixels, heatmap)
    radius = max(3, round(min(rgb.shape[:2]) / 40))
    cv2.circle(rgb, (int(peak[0]), int(peak[1])), radius, (255, 255, 255), 2)
    return rgb


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a uint8 RGB image as PNG, atomically."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"PNG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
