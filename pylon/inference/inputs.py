"""Inputs for prediction: gather image/DICOM files from paths and folders, and read one as uint8."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from pylon.data.dicom import DICOM_SUFFIXES, DicomImage, check_voi, read_dicom_image
from pylon.data.images import read_image, refuse_too_large
from pylon.locks import LOCK_NAME

# what pylon.data.images.read_image decodes (OpenCV, with PIL reading the header)
IMAGE_SUFFIXES = (
    ".png",
    ".jpg",
    ".jpeg",
    ".jpe",
    ".tif",
    ".tiff",
    ".bmp",
    ".dib",
    ".webp",
    ".jp2",
    ".pgm",
    ".ppm",
    ".pbm",
    ".pnm",
)
INPUT_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
SUPPORTED = "PNG, JPEG, TIFF, BMP, WebP, JPEG 2000, PNM or DICOM"
# the DICOM readings `pylon predict` offers (pylon.data.dicom.READINGS)
PREDICT_VOI = ("window", "minmax")


@dataclass
class InputImage:
    """One decoded input: uint8 ``(H, W, channels)`` pixels at the file's own resolution; for a
    DICOM also its pixel spacing (``(row, column)`` mm, ``None`` when unknown), the attribute it
    came from, and the reading applied (:attr:`pylon.data.dicom.DicomImage.reading`)."""

    image_id: str
    path: Path | None
    pixels: np.ndarray
    pixel_spacing: tuple[float, float] | None = None
    spacing_attribute: str | None = None
    reading: str | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the original image."""
        return int(self.pixels.shape[0]), int(self.pixels.shape[1])


@dataclass
class ScannedInputs:
    """What :func:`scan_inputs` found: the files to read and those of the folders it skipped."""

    items: list[tuple[str, Path]]  # (image_id, path)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)


def gather_inputs(
    inputs: Iterable[str | os.PathLike],
    *,
    recursive: bool = False,
    exclude: Iterable[str | os.PathLike] = (),
) -> list[tuple[str, Path]]:
    """``(image_id, path)`` of the inputs: :func:`scan_inputs`'s items (skipped files dropped)."""
    return scan_inputs(inputs, recursive=recursive, exclude=exclude).items


def scan_inputs(
    inputs: Iterable[str | os.PathLike],
    *,
    recursive: bool = False,
    exclude: Iterable[str | os.PathLike] = (),
) -> ScannedInputs:
    """Every file given and every image/DICOM inside the folders given, and what was skipped.

    A file named explicitly is kept whatever its suffix (a DICOM may have none). In a folder, a
    file is read when its suffix is one of :data:`INPUT_SUFFIXES` or, whatever its suffix, when it
    has the DICOM preamble (``DICM`` at byte 128); any other file, a dangling symbolic link or an
    unreadable file is skipped with its reason (a ``.pylon.lock`` is left out silently). The id is
    the file's path relative to the folder given (``scans/a/x.png`` in folder ``scans`` gives
    ``a/x.png``), or its file name when the file itself is given; the suffix is kept, so
    ``x.png``, ``x.PNG`` and ``x-2.png`` are three ids, and an id does not depend on the other
    files. The same file reached twice is predicted once.

    Args:
        inputs: files and folders.
        recursive: also scan the folders' sub-folders.
        exclude: files and folders left out of folder scans, silently, where they lie inside a
            folder given (``pylon predict``'s own ``--out`` and its outputs, so that a rerun does
            not predict its overlays).

    Returns:
        The :class:`ScannedInputs`.

    Raises:
        FileNotFoundError: an input that does not exist.
        ValueError: two different files that would get the same id (from two inputs); the message
            names both and suggests passing their common folder instead.
    """
    excluded = {Path(p).resolve() for p in exclude}
    found: dict[str, Path] = {}
    skipped: list[tuple[Path, str]] = []
    seen_files: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files, folder_skipped = _scan_folder(path, recursive, excluded)
            skipped += folder_skipped
            pairs = [(p.relative_to(path).as_posix(), p) for p in files]
        elif path.is_file():
            pairs = [(path.name, path)]
        else:
            raise FileNotFoundError(f"input not found: {path} (expected an image, DICOM or folder)")
        for image_id, file in pairs:
            resolved = file.resolve()
            if resolved in seen_files:
                continue
            if image_id in found:
                raise ValueError(
                    f"{found[image_id]} and {file} would both get the id {image_id!r}; pass "
                    "their common folder instead (ids are paths relative to the folder given)"
                )
            seen_files.add(resolved)
            found[image_id] = file
    return ScannedInputs(list(found.items()), skipped)


def _scan_folder(
    folder: Path, recursive: bool, excluded: set[Path]
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The readable files of ``folder`` (sorted) and the skipped ones with their reasons."""
    root = folder.resolve()
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        resolved_here = root / here.relative_to(folder)
        # os.walk does not enter symlinked folders; a name in dirnames may still be one
        dirnames[:] = sorted(d for d in dirnames if resolved_here / d not in excluded)
        links = [d for d in dirnames if (here / d).is_symlink()]
        for name in sorted(filenames) + links:
            if name == LOCK_NAME or resolved_here / name in excluded:
                continue
            path = here / name
            reason = _skip_reason(path)
            if reason is None:
                files.append(path)
            elif reason:
                skipped.append((path, reason))
        if not recursive:
            break
    return sorted(files), sorted(skipped)


def _skip_reason(path: Path) -> str | None:
    """``None`` for a file to read, ``""`` for one to leave out silently, else why it is not."""
    if path.is_symlink() and not path.exists():
        return f"dangling symbolic link (its target {os.readlink(path)} does not exist)"
    if path.is_dir():
        return ""  # a symlinked folder: os.walk does not follow links
    if not path.is_file():
        return "not a regular file"
    if path.suffix.lower() in INPUT_SUFFIXES:
        return None
    try:
        if has_dicom_preamble(path):
            return None
    except OSError as err:
        return f"cannot read it ({err.strerror or err})"
    return f"not an image ({SUPPORTED}; suffix {path.suffix or 'none'}, no DICM preamble)"


def file_source(path: Path) -> dict[str, object]:
    """What a prediction of ``path`` was made from: ``path``, ``file_bytes``, ``file_mtime_ns``
    (a rerun redoes a record whose file no longer matches; the sizes are ``None`` when the file
    cannot be stat'ed)."""
    try:
        stat = path.stat()
    except OSError:
        return {"path": str(path), "file_bytes": None, "file_mtime_ns": None}
    return {"path": str(path), "file_bytes": stat.st_size, "file_mtime_ns": stat.st_mtime_ns}


def has_dicom_preamble(path: Path) -> bool:
    """True when ``path`` has the DICOM magic ``DICM`` at byte 128."""
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def is_dicom(path: Path) -> bool:
    """True for ``.dcm``/``.dicom`` files and for any file with the DICOM preamble magic."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    return has_dicom_preamble(path)


def read_dicom(
    path: Path, channels: int, max_pixels_limit: int | None = None, *, voi: str = "window"
) -> tuple[np.ndarray, DicomImage]:
    """A DICOM read by :func:`pylon.data.dicom.read_dicom_image` with ``voi`` (default the
    radiology reading: modality LUT, VOI LUT or first window, MONOCHROME1 inverted), rounded to
    uint8 ``(H, W, channels)`` at its native resolution, so that peaks are reported in the
    DICOM's own pixels; also the :class:`~pylon.data.dicom.DicomImage` it was made from.

    The header's Rows x Columns are checked against the pixel limit before the pixels are read.
    """
    check_voi(voi, PREDICT_VOI)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    rows, columns = header.get("Rows"), header.get("Columns")
    if not rows or not columns:
        raise ValueError(f"{path}: DICOM header lacks Rows/Columns (no image in this file?)")
    rows, columns = int(rows), int(columns)
    refuse_too_large(path, rows, columns, max_pixels_limit, what="DICOM")
    dicom = read_dicom_image(path, voi=voi)
    image = dicom.to_uint8()[:, :, None]
    return (np.repeat(image, channels, axis=2) if channels == 3 else image), dicom


def load_input(
    path: str | os.PathLike,
    channels: int,
    image_id: str | None = None,
    *,
    max_pixels_limit: int | None = None,
    voi: str = "window",
    png16: str = "bits",
) -> InputImage:
    """Decode a PNG/JPEG (8 or 16 bit, gray/RGB/RGBA) or DICOM file to uint8 ``(H, W, channels)``.

    Args:
        path: the file.
        channels: 1 or 3 (the model's input channels).
        image_id: the id of the result (default: the file name).
        max_pixels_limit: refuse files whose header declares more pixels, before decoding
            (default :func:`pylon.data.images.max_pixels`: ``$PYLON_MAX_PIXELS`` or 100 MP;
            0: no limit).
        voi: how a DICOM is read: ``"window"`` (modality LUT, then its VOI LUT or first window,
            min-max where it has neither) or ``"minmax"`` (modality LUT, then min-max); both
            invert MONOCHROME1 (:func:`pylon.data.dicom.read_dicom_image`).
        png16: how a 16-bit image is scaled (:func:`pylon.data.images.read_image`: ``"bits"``,
            ``"minmax"`` or ``"full"``).

    Returns:
        The decoded :class:`InputImage`.

    Raises:
        FileNotFoundError: a missing file.
        ValueError: naming the file and the reason for anything that cannot be decoded
            (:class:`~pylon.data.images.ImageTooLargeError` for an image over the limit).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    dicom = None
    try:
        if is_dicom(path):
            pixels, dicom = read_dicom(path, channels, max_pixels_limit, voi=voi)
        else:
            pixels = read_image(path, channels, max_pixels_limit=max_pixels_limit, png16=png16)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as err:  # noqa: BLE001  decoders raise many types; name the file and reason
        raise ValueError(f"cannot read {path}: {type(err).__name__}: {err}") from err
    if dicom is None:
        return InputImage(image_id or path.name, path, pixels)
    return InputImage(
        image_id or path.name,
        path,
        pixels,
        pixel_spacing=dicom.pixel_spacing,
        spacing_attribute=dicom.spacing_attribute,
        reading=dicom.reading,
    )


def array_input(image, channels: int, image_id: str = "array") -> InputImage:
    """Wrap an in-memory image: a PIL image, or an ndarray ``(H, W)``/``(H, W, 1|3|4)`` of uint8,
    uint16 (full range) or floats in [0, 1]."""
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode.startswith("I;16"):
            image = np.asarray(image).astype(np.uint16)
        else:
            image = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    array = np.asarray(image)
    given_shape = array.shape
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ValueError(
            f"image {image_id!r}: expected an array of shape (H, W) or (H, W, 1|3|4), "
            f"got {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"image {image_id!r}: empty image of shape {given_shape}; expected at least 1 x 1 "
            "pixels, (H, W) or (H, W, 1|3|4)"
        )
    array = _to_uint8(array, image_id)[:, :, :3]
    if array.shape[2] != channels:
        if channels == 3:
            array = np.repeat(array, 3, axis=2)
        else:  # ITU-R BT.601 luma, as OpenCV's RGB->gray
            luma = array.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            array = np.clip(np.rint(luma), 0, 255).astype(np.uint8)[:, :, None]
    return InputImage(image_id, None, np.ascontiguousarray(array))


def _to_uint8(array: np.ndarray, image_id: str) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return np.clip(np.rint(array / 257.0), 0, 255).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ValueError(f"image {image_id!r}: float pixels must be finite and in [0, 1]")
        return np.rint(array * 255.0).astype(np.uint8)
    raise ValueError(
        f"image {image_id!r}: unsupported pixel type {array.dtype}; use uint8, uint16 or float"
    )
