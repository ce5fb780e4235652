"""Robust image reading: 8/16-bit, gray/RGB/RGBA/palette PNGs and JPEGs to a fixed channel count."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image


def read_image(
    path: str | os.PathLike,
    channels: int = 1,
    dtype: Literal["uint8", "float32"] = "uint8",
) -> np.ndarray:
    """Decode ``path`` to an ``(H, W, channels)`` array, RGB order for 3 channels.

    16-bit images are scaled from their full range (``uint8``: ``/257``; ``float32``: ``/65535``),
    alpha is dropped, colour is converted to luma for 1 channel and gray replicated for 3.
    ``float32`` values lie in [0, 1].
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    # imdecode of the bytes rather than imread, so that non-ASCII paths work everywhere.
    raw = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if image is None:
        raise ValueError(f"cannot decode image {path}: not a readable PNG/JPEG/BMP/TIFF file")
    if image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        code = cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    elif image.ndim == 3 and image.shape[2] == 2:  # gray + alpha
        image = image[:, :, 0]
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, channels):
        raise ValueError(f"unsupported image layout {image.shape} in {path}")
    if channels == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return _convert_depth(image, dtype, path)


def _convert_depth(image: np.ndarray, dtype: str, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale = 65535.0
    elif image.dtype == np.float32:
        return np.clip(image, 0.0, 1.0) if dtype == "float32" else _to_uint8(image * 255.0)
    else:
        raise ValueError(f"unsupported pixel type {image.dtype} in {path}")
    if dtype == "float32":
        return image.astype(np.float32) / scale
    if dtype != "uint8":
        raise ValueError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
    return image if scale == 255.0 else _to_uint8(image.astype(np.float32) / 257.0)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image read from its header only (no pixel decoding)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, SyntaxError) as err:
        raise ValueError(f"cannot read the image header of {path}: {err}") from err
    return height, width
