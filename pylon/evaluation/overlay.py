"""Heatmap-on-image overlays as plain uint8 RGB arrays (no matplotlib figure): the reference's
style (map min-max scaled per image, heat + 0.5 x image) and absolute probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam.utils.image import show_cam_on_image


def _to_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().float().cpu().numpy()
    return np.asarray(array)


def image_to_rgb(image) -> np.ndarray:
    """A grayscale ``(H, W)``/``(H, W, 1)`` or RGB ``(H, W, 3)`` image as float32 RGB in [0, 1].

    uint8 images are divided by 255; anything else is min-max scaled to [0, 1].
    """
    array = _to_numpy(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"image must be (H, W), (H, W, 1) or (H, W, 3), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def resize_heatmap(heatmap, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False, like the metrics) resize of a 2-D heatmap to (H, W)."""
    array = _to_numpy(heatmap).astype(np.float32)
    while array.ndim > 2 and array.shape[0] == 1:  # (1, h, w) or (1, 1, h, w)
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (h, w), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("heatmap contains NaN or infinite values")
    if array.min() < 0 or array.max() > 1:
        raise ValueError(
            f"heatmap values must lie in [0, 1] (apply a sigmoid to raw CAM scores first), "
            f"got [{array.min():.3g}, {array.max():.3g}]"
        )
    up = F.interpolate(torch.from_numpy(array)[None, None], size=size, mode="bilinear")
    return up[0, 0].clamp(0, 1).numpy()


STYLES = ("reference", "probability")
STYLE_TITLES = {
    "reference": "map min-max scaled per image",
    "probability": "absolute probability",
}


def reference_overlay(rgb: np.ndarray, heat: np.ndarray, weight: float = 0.5) -> np.ndarray:
    """The reference implementation's overlay: the map min-max scaled to [0, 1], coloured by
    OpenCV's JET of ``1 - map`` read as RGB (so the highest values are red), added to the image
    with ``weight``, and the sum scaled by its maximum.

    Args:
        rgb: float RGB image in [0, 1], ``(H, W, 3)``.
        heat: the map at the image's size, ``(H, W)``.
        weight: the heat's weight (the reference's 0.5).

    Returns:
        uint8 ``(H, W, 3)`` RGB.
    """
    low, high = float(heat.min()), float(heat.max())
    scaled = (heat - low) / (high - low) if high > low else np.zeros_like(heat)
    color = cv2.applyColorMap(np.uint8(255 * (1 - scaled)), cv2.COLORMAP_JET)
    out = rgb + weight * (color.astype(np.float32) / 255.0)
    out = out / out.max() if out.max() > 0 else out
    return np.uint8(np.round(255 * out))


def overlay_image(
    image,
    heatmap,
    *,
    boxes: Sequence[Sequence[float]] = (),
    alpha: float = 0.5,
    style: str = "probability",
    colormap: int = cv2.COLORMAP_JET,
    box_color: tuple[int, int, int] = (0, 255, 0),
    box_thickness: int = 2,
) -> np.ndarray:
    """Blend ``heatmap`` (values in [0, 1], any resolution) over ``image``, at the image's size.

    Args:
        image: ``(H, W)`` grey or ``(H, W, 3)`` RGB image.
        heatmap: ``(h, w)`` map in [0, 1] (a sigmoid of the CAM).
        boxes: ``(x, y, w, h, ...)`` in the image's pixels, drawn as rectangles.
        alpha: the heatmap's weight.
        style: ``"probability"`` (absolute values: a blend through pytorch-grad-cam's
            ``show_cam_on_image``) or ``"reference"`` (:func:`reference_overlay`).
        colormap, box_color, box_thickness: drawing options of the probability style / boxes.

    Returns:
        uint8 ``(H, W, 3)`` RGB array.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if style not in STYLES:
        raise ValueError(f"style={style!r}; expected one of {', '.join(STYLES)}")
    rgb = image_to_rgb(image)
    heat = resize_heatmap(heatmap, rgb.shape[:2])
    if style == "reference":
        out = np.ascontiguousarray(reference_overlay(rgb, heat, weight=alpha))
    else:
        out = np.ascontiguousarray(
            show_cam_on_image(rgb, heat, use_rgb=True, colormap=colormap, image_weight=1 - alpha)
        )
    for box in boxes:
        x, y, w, h = (float(v) for v in box[:4])
        top_left = (int(round(x)), int(round(y)))
        bottom_right = (int(round(x + w)), int(round(y + h)))
        cv2.rectangle(out, top_left, bottom_right, box_color, box_thickness)
    return out
