"""Robust image reading: 8/16-bit, gray/RGB/RGBA/palette PNGs and JPEGs to a fixed channel count,
in the orientation a viewer shows (EXIF Orientation applied), with a pixel limit checked from the
header before any decoding, and 16-bit images that use only part of their range (12-bit
radiographs stored in 16 bits) scaled by the bit depth they use (:data:`PNG16`).
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from PIL import Image

MAX_PIXELS_ENV = "PYLON_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels: a 10000 x 10000 image (NIH PNGs are 1 MP)
ORIENTATION_TAG = 0x0112
# How 16-bit images become 8-bit or [0, 1] (read_image's png16): see read_image.
PNG16 = ("bits", "minmax", "full")
_PIL_LIMIT_LOCK = threading.Lock()


class ImageTooLargeError(ValueError):
    """An image's header declares more pixels than the limit (:func:`max_pixels`)."""


def max_pixels(limit: int | None = None) -> int | None:
    """The pixel limit in force: ``limit`` if given, else ``$PYLON_MAX_PIXELS``, else
    :data:`DEFAULT_MAX_PIXELS`; ``0`` (or the variable set to ``0``/``none``) means no limit."""
    if limit is None:
        text = os.environ.get(MAX_PIXELS_ENV, "").strip().lower()
        if not text:
            return DEFAULT_MAX_PIXELS
        if text == "none":
            return None
        try:
            limit = int(float(text))
        except ValueError:
            raise ValueError(
                f"{MAX_PIXELS_ENV}={text!r}; expected a number of pixels like 100000000, "
                "or 0/none for no limit"
            ) from None
    if limit < 0:
        raise ValueError(f"max_pixels={limit}; expected >= 0 (0: no limit)")
    return limit or None


def check_pixel_limit(
    path: str | os.PathLike, max_pixels_limit: int | None = None
) -> tuple[int, int]:
    """Read ``path``'s header only and refuse it when it has more pixels than the limit.

    Cheap (no pixel decoding, memory independent of the image's size): call it before decoding
    an untrusted image.

    Args:
        path: a PNG/JPEG/BMP/TIFF file.
        max_pixels_limit: the limit (default :func:`max_pixels`: ``$PYLON_MAX_PIXELS`` or 100 MP;
            0 = none).

    Returns:
        The image's ``(height, width)`` as displayed (EXIF Orientation applied).

    Raises:
        ImageTooLargeError: naming the file, its size, the limit and how to raise it.
        FileNotFoundError / ValueError: a missing file or an unreadable header.
    """
    path = Path(path)
    height, width, _ = _header(path)
    refuse_too_large(path, height, width, max_pixels_limit)
    return height, width


def refuse_too_large(
    path: str | os.PathLike,
    height: int,
    width: int,
    max_pixels_limit: int | None = None,
    *,
    what: str = "image",
) -> None:
    """Raise :class:`ImageTooLargeError` when ``height x width`` exceeds the pixel limit.

    Args:
        path: the file, for the message.
        height, width: its size in pixels, read from its header.
        max_pixels_limit: the limit (``None``: :func:`max_pixels`'s default or environment).
        what: how the message names the file's content (``"image"``, ``"DICOM"``).
    """
    limit = max_pixels(max_pixels_limit)
    if limit is not None and height * width > limit:
        raise ImageTooLargeError(
            f"{path}: {what} of {width}x{height} pixels ({height * width / 1e6:.1f} megapixels) "
            f"exceeds the limit of {limit / 1e6:g} megapixels; shrink the image, or raise the "
            f"limit with {MAX_PIXELS_ENV}=<pixels> or --max-pixels / max_pixels (0 for none)"
        )


# How the datasets read 16-bit images: over the whole 16-bit range, as the reference's OpenCV
# reading (and pylon's caches) always did; ``predict`` reads by the bit depth the image uses.
DATASET_PNG16 = "full"


def read_image(
    path: str | os.PathLike,
    channels: int = 1,
    dtype: Literal["uint8", "float32"] = "uint8",
    *,
    max_pixels_limit: int | None = None,
    orientation: bool = True,
    png16: str = "bits",
) -> np.ndarray:
    """Decode ``path`` to an ``(H, W, channels)`` array, RGB order for 3 channels.

    16-bit images (PNG, TIFF) are scaled as ``png16`` says, alpha is dropped, colour is
    converted to luma for 1 channel and gray replicated for 3. ``float32`` values lie in [0, 1].

    Args:
        path: the image file.
        channels: 1 or 3.
        dtype: ``"uint8"`` or ``"float32"``.
        max_pixels_limit: refuse images with more pixels (checked from the header before
            decoding; default :func:`max_pixels`).
        orientation: apply the EXIF Orientation tag (JPEG APP1 or PNG eXIf), so the array is
            the image as a viewer shows it; ``False`` keeps the stored orientation.
        png16: how a 16-bit image's values ``v`` become [0, 1]: ``"bits"`` (default)
            ``v / (2^b - 1)`` with ``b`` the bit depth the image uses: the PNG ``sBIT`` chunk's
            significant bits, or more where the values exceed them (an encoder that scaled the
            samples up to 16 bits, as the PNG standard asks), and without ``sBIT`` the bit
            length of the image's largest value; ``"minmax"`` ``(v - min) / (max - min)`` of
            this image; ``"full"`` ``v / 65535`` (the 16-bit range, pylon's earlier reading).
            ``"bits"`` keeps one intensity scale for every image of a set that declares its
            depth, and a 12-bit radiograph stored in 16 bits is no longer nearly black; a
            full-range 16-bit image reads as with ``"full"``.

    Returns:
        The ``(H, W, channels)`` array.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if png16 not in PNG16:
        raise ValueError(f"png16 {png16!r}: expected one of {', '.join(PNG16)}")
    path = Path(path)
    check_pixel_limit(path, max_pixels_limit)
    _, _, turn = _header(path)
    # imdecode of the bytes rather than imread, so that non-ASCII paths work everywhere.
    raw = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED) if raw.size else None
    if image is None:
        raise ValueError(f"cannot decode image {path}: not a readable PNG/JPEG/BMP/TIFF file")
    if orientation and turn not in (0, 1):
        image = np.ascontiguousarray(apply_orientation(image, turn))
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
    return _convert_depth(image, dtype, path, png16)


def _convert_depth(image: np.ndarray, dtype: str, path: Path, png16: str = "full") -> np.ndarray:
    if dtype not in ("uint8", "float32"):
        raise ValueError(f"dtype must be 'uint8' or 'float32', got {dtype!r}")
    low = 0.0
    if image.dtype == np.uint8:
        scale = 255.0
    elif image.dtype == np.uint16:
        scale, low = _scale16(image, path, png16)
    elif image.dtype == np.float32:
        return np.clip(image, 0.0, 1.0) if dtype == "float32" else _to_uint8(image * 255.0)
    else:
        raise ValueError(f"unsupported pixel type {image.dtype} in {path}")
    if dtype == "float32":
        return ((image.astype(np.float32) - low) / scale).astype(np.float32)
    if scale == 255.0 and low == 0.0:
        return image if image.dtype == np.uint8 else _to_uint8(image.astype(np.float32))
    if scale == 65535.0:  # 65535 / 257 = 255
        return _to_uint8(image.astype(np.float32) / 257.0)
    return _to_uint8((image.astype(np.float64) - low) * 255.0 / scale)


def _scale16(image: np.ndarray, path: Path, png16: str) -> tuple[float, float]:
    """``(scale, low)`` such that ``(v - low) / scale`` is a 16-bit value ``v`` in [0, 1]."""
    if png16 == "full":
        return 65535.0, 0.0
    high = int(image.max()) if image.size else 0
    if png16 == "minmax":
        low = int(image.min()) if image.size else 0
        return float(max(high - low, 1)), float(low)
    bits = max(png_significant_bits(path) or 0, high.bit_length(), 1)
    return float(2**bits - 1), 0.0


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(height, width)`` of an image as displayed, from its header only (no pixel decoding)."""
    height, width, _ = _header(Path(path))
    return height, width


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn a stored ``(H, W[, C])`` array into its displayed orientation.

    Args:
        image: the pixels as stored.
        orientation: the EXIF Orientation value (1-8; 1 = as stored).

    Returns:
        A view of ``image`` flipped/rotated as the tag says (as ``PIL.ImageOps.exif_transpose``).
    """
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transpose; then 6/7/8 flip as below
    if orientation in (2, 3, 6, 7):
        image = image[:, ::-1]
    if orientation in (3, 4, 7, 8):
        image = image[::-1]
    return image


def _header(path: Path) -> tuple[int, int, int]:
    """Displayed ``(height, width)`` and the EXIF orientation (0: none) from the header."""
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        # PIL's own decompression-bomb check would raise before we can name the size; ours
        # (check_pixel_limit) replaces it, so it is off while the header is read.
        with _PIL_LIMIT_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                im = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with im:
            width, height = im.size
            turn = _orientation(im, path)
    except (OSError, SyntaxError, struct.error) as err:
        raise ValueError(f"cannot read the image header of {path}: {err}") from err
    if turn in (5, 6, 7, 8):
        height, width = width, height
    return height, width, turn


def _orientation(im: Image.Image, path: Path) -> int:
    if im.format == "PNG":
        data = _png_exif(path)  # PIL's PNG getexif() would decode every pixel to find it
        if data is None:
            return 0
        exif = Image.Exif()
        exif.load(data)
    else:
        exif = im.getexif()
    value = exif.get(ORIENTATION_TAG, 0)
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 0


def _png_exif(path: Path) -> bytes | None:
    """The payload of a PNG's ``eXIf`` chunk, walking chunk headers only."""
    return _png_chunk(path, b"eXIf", b"IEND")


def png_significant_bits(path: str | os.PathLike) -> int | None:
    """The significant bits a PNG's ``sBIT`` chunk declares (the largest of its gray or colour
    channels; alpha left out), or ``None`` for a PNG without one or another file."""
    data = _png_chunk(Path(path), b"sBIT", b"IDAT")  # sBIT precedes the image data
    if not data:
        return None
    # gray: 1 byte; gray + alpha: 2; RGB and palette: 3; RGBA: 4 (PNG 11.3.3.4)
    colour = data[:1] if len(data) == 2 else data[:3]
    return max(colour)


def _png_chunk(path: Path, wanted: bytes, stop: bytes) -> bytes | None:
    """The payload of the first ``wanted`` chunk of a PNG before a ``stop`` chunk, walking chunk
    headers only (``None``: not a PNG, or no such chunk)."""
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            head = fh.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind == wanted:
                return fh.read(length)
            if kind in (stop, b"IEND"):
                return None
            fh.seek(length + 4, os.SEEK_CUR)  # data and CRC
