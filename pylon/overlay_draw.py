"""The drawing primitives of heatmap overlays, as plain uint8 RGB arrays (no matplotlib figure):
the reference's style (map min-max scaled per image, heat + 0.5 x image) or absolute
probabilities, boxes and the peak ring. A low module (numpy, OpenCV, torch only) so that training
(TensorBoard images) and evaluation, prediction and the viewer (through
:mod:`pylon.evaluation.overlay`) draw with one colour map. Images whose longer side exceeds
``DISPLAY_MAX_SIDE`` are drawn at that bounded size (boxes and peaks scaled with them)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

# Overlays are for looking at: a 3000 x 3000 DICOM is drawn at most 2048 px on its longer side.
DISPLAY_MAX_SIDE = 2048


def _to_numpy(array) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        array = array.detach().float().cpu().numpy()
    return np.asarray(array)


def image_to_rgb(image) -> np.ndarray:
    """A grayscale ``(H, W)``/``(H, W, 1)`` or RGB ``(H, W, 3)`` image as float32 RGB in [0, 1].

    Args:
        image: numpy array or tensor; uint8 images are divided by 255, anything else is min-max
            scaled to [0, 1].

    Returns:
        float32 ``(H, W, 3)`` array in [0, 1].
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


def display_scale(shape: Sequence[int], max_side: int | None = DISPLAY_MAX_SIDE) -> float:
    """The factor (<= 1) an image of ``shape`` (H, W, ...) is drawn at so that its longer side is
    at most ``max_side`` pixels.

    Args:
        shape: the image's shape.
        max_side: the bound (``None``: never scale).

    Returns:
        1.0, or ``max_side / max(H, W)`` for larger images.
    """
    longer = max(int(shape[0]), int(shape[1]))
    if max_side is None or longer <= max_side:
        return 1.0
    if max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    return max_side / longer


def fit_display(image, max_side: int | None = DISPLAY_MAX_SIDE) -> tuple[np.ndarray, float]:
    """``image`` as float32 RGB in [0, 1] (:func:`image_to_rgb`), shrunk with area interpolation
    when its longer side exceeds ``max_side``.

    Args:
        image: grey or RGB image (see :func:`image_to_rgb`).
        max_side: the display bound (``None``: keep the resolution).

    Returns:
        ``(rgb, scale)``: the display image and the factor from original to display pixels.
    """
    rgb = image_to_rgb(image)
    scale = display_scale(rgb.shape, max_side)
    if scale < 1.0:
        height, width = rgb.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))  # cv2: (w, h)
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    return rgb, scale


def resize_heatmap(heatmap, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (align_corners=False, like the metrics) resize of a 2-D heatmap.

    Args:
        heatmap: ``(h, w)`` (or ``(1, h, w)``, ``(1, 1, h, w)``) values in [0, 1].
        size: the target ``(H, W)``.

    Returns:
        float32 ``(H, W)`` array in [0, 1].

    Raises:
        ValueError: for another shape, NaN/infinity or values outside [0, 1].
    """
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
    style: str = "reference",
    max_side: int | None = DISPLAY_MAX_SIDE,
    colormap: int = cv2.COLORMAP_JET,
    box_color: tuple[int, int, int] = (0, 255, 0),
    box_thickness: int = 2,
) -> np.ndarray:
    """Blend ``heatmap`` (values in [0, 1], any resolution) over ``image``, at the image's size
    (or, for an image larger than ``max_side``, at :func:`display_scale` of it).

    Args:
        image: ``(H, W)`` grey or ``(H, W, 3)`` RGB image.
        heatmap: ``(h, w)`` map in [0, 1] (a sigmoid of the CAM).
        boxes: ``(x, y, w, h, ...)`` in the image's pixels, drawn as rectangles.
        alpha: the heatmap's weight (the reference's 0.5).
        style: ``"reference"`` (:func:`reference_overlay`: map min-max scaled per image) or
            ``"probability"`` (absolute values: a blend through pytorch-grad-cam's
            ``show_cam_on_image``).
        max_side: longest side drawn (``None``: always the full resolution).
        colormap, box_color, box_thickness: drawing options of the probability style / boxes.

    Returns:
        uint8 ``(h', w', 3)`` RGB array: the image's size times :func:`display_scale`.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if style not in STYLES:
        raise ValueError(f"style={style!r}; expected one of {', '.join(STYLES)}")
    rgb, scale = fit_display(image, max_side)
    heat = resize_heatmap(heatmap, rgb.shape[:2])
    if style == "reference":
        out = np.ascontiguousarray(reference_overlay(rgb, heat, weight=alpha))
    else:
        # imported here: pytorch-grad-cam takes seconds to import, and training draws with this
        from pytorch_grad_cam.utils.image import show_cam_on_image

        out = np.ascontiguousarray(
            show_cam_on_image(rgb, heat, use_rgb=True, colormap=colormap, image_weight=1 - alpha)
        )
    for box in boxes:
        x, y, w, h = (float(v) * scale for v in box[:4])
        top_left = (int(round(x)), int(round(y)))
        bottom_right = (int(round(x + w)), int(round(y + h)))
        cv2.rectangle(out, top_left, bottom_right, box_color, box_thickness)
    return out


def peak_radius(shape: Sequence[int]) -> int:
    """The peak ring's radius for a drawn image of ``shape`` (H, W, ...): 1/40 of its shorter side,
    at least 3 pixels."""
    return max(3, round(min(int(shape[0]), int(shape[1])) / 40))


def draw_peak(rgb: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Draw the peak marker, a white ring of :func:`peak_radius`, in place.

    Args:
        rgb: uint8 ``(H, W, 3)`` contiguous RGB array (e.g. from :func:`overlay_image`).
        centre: ``(x, y)`` in ``rgb``'s pixels.

    Returns:
        ``rgb``.
    """
    point = (int(round(centre[0])), int(round(centre[1])))
    cv2.circle(rgb, point, peak_radius(rgb.shape), (255, 255, 255), 2)
    return rgb
