"""Reading DICOM radiographs, and DICOM to 8-bit PNG conversion with a per-image resize-ratio CSV.

:func:`read_dicom_image` is the one DICOM reading of ``convert-dicom``, ``predict`` and viewers:
the radiology reading (Modality LUT, then the file's VOI LUT or window, then MONOCHROME1
inversion, with pydicom's ``apply_modality_lut`` / ``apply_voi_lut``), a min-max of the modality
values, or the reference implementation's reading of the stored values (:data:`READINGS`).

The default conversion recipe is the reference implementation's (its reading, histogram
equalisation, linear resize); ``PLAIN_CONVERSION`` reads as ``pylon predict`` does (the
radiology reading), keeps that contrast and resizes with INTER_AREA. Images are only ever
shrunk: the longer side becomes ``min(size, source longer side)``.

A converted folder records its settings in ``conversion.json``, so a rerun with other settings is
refused (or redone with ``overwrite``) instead of mixing two kinds of PNG. What pydicom and the C
libraries (libpng, OpenJPEG) say while a file converts is kept as that file's warnings in the
report instead of reaching the terminal.

Compressed transfer syntaxes decode through pydicom's pixel-data plugins (pylibjpeg-libjpeg,
-openjpeg, -rle), which are declared dependencies.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from pylon.data.images import refuse_too_large
from pylon.io import atomic_path, write_csv_atomic, write_text_atomic
from pylon.progress import Progress

RATIO_FILE = "ratios.csv"
SETTINGS_FILE = "conversion.json"
RATIO_COLUMNS = ["image_id", "ratio", "original_height", "original_width", "height", "width"]
DICOM_SUFFIXES = (".dicom", ".dcm")
INTERPOLATIONS = ("linear", "area", "cubic")
# How stored values become display values in [0, 1] (``voi`` of read_dicom_image); each ends
# with MONOCHROME1 inverted so that larger is brighter.
READINGS = {
    "window": "modality LUT, then the file's VOI LUT or its first window (min-max where it has "
    "neither), MONOCHROME1 inverted",
    "minmax": "modality LUT, then min-max over the image, MONOCHROME1 inverted",
    "stored": "the stored values min-max scaled, no modality or VOI LUT (the reference's "
    "reading), MONOCHROME1 inverted",
}
# what conversion.json files written before the reading was recorded used
LEGACY_VOI = "stored"


@dataclass(frozen=True)
class DicomConversion:
    """How DICOM pixels become an 8-bit image.

    ``voi``: the reading of :func:`read_dicom_image` (:data:`READINGS`: ``"stored"``, the
    reference's, or ``"window"``, the radiology reading, or ``"minmax"``). ``equalize``:
    histogram equalisation of the display values (256 bins, the CDF interpolated at the bins'
    left edges, as the reference's script). ``interpolation``: ``linear`` (OpenCV's default, the
    reference), ``area`` (INTER_AREA when shrinking, cubic when enlarging) or ``cubic``.
    ``floor``: pixel levels and output sizes are truncated to integers as the reference does
    (``astype``); otherwise rounded to the nearest.
    """

    equalize: bool = True
    interpolation: str = "linear"
    floor: bool = True
    voi: str = "stored"

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; expected one of {INTERPOLATIONS}"
            )
        check_voi(self.voi)


def check_voi(voi: str, choices=tuple(READINGS), *, what: str = "voi") -> str:
    """``voi`` when it is one of ``choices`` (default all of :data:`READINGS`).

    Args:
        voi: the reading asked for.
        choices: the readings allowed.
        what: how the message names the setting (``"--voi"`` on the command line).

    Raises:
        ValueError: naming the value and the choices.
    """
    if voi not in choices:
        raise ValueError(f"{what} {voi!r}: expected one of {', '.join(choices)}")
    return voi


# The reference implementation's scripts/convert_dcm_to_png.py: its reading, equalised.
REFERENCE_CONVERSION = DicomConversion()
# What `pylon predict` reads (the radiology reading), not equalised, area resize.
PLAIN_CONVERSION = DicomConversion(equalize=False, interpolation="area", floor=False, voi="window")


@dataclass
class DicomImage:
    """A single-frame grayscale DICOM read for display (:func:`read_dicom_image`).

    Attributes:
        values: float64 ``(rows, columns)`` in [0, 1], larger is brighter (as a viewer shows it).
        reading: what was applied to the stored values, in words, e.g. ``"modality LUT
            (rescale slope 1, intercept -1024), window centre 40 width 400 (first of 2, LINEAR),
            MONOCHROME1 inverted"``.
        pixel_spacing: ``(row spacing, column spacing)`` in mm, the distance between the centres
            of adjacent rows and of adjacent columns (``PixelSpacing``, else
            ``ImagerPixelSpacing``); ``None`` when the file has neither (or an unusable one).
        spacing_attribute: ``"PixelSpacing"``, ``"ImagerPixelSpacing"`` or ``None``.
    """

    values: np.ndarray
    reading: str
    pixel_spacing: tuple[float, float] | None = None
    spacing_attribute: str | None = None

    def to_uint8(self, floor: bool = False) -> np.ndarray:
        """``values`` as uint8 0..255, rounded (``floor``: truncated, as the reference)."""
        quantise = np.floor if floor else np.rint
        return np.clip(quantise(self.values * 255.0), 0, 255).astype(np.uint8)


def equalize_histogram(values: np.ndarray, bins: int = 256) -> np.ndarray:
    """Histogram equalisation of float ``values`` in [0, 1] (the reference's definition):
    the normalised cumulative histogram of ``bins`` equal bins, linearly interpolated at the
    bins' left edges, scaled to the maximum value."""
    counts, edges = np.histogram(values, bins)
    cdf = np.cumsum(counts, dtype=np.float64)
    cdf = values.max() * cdf / cdf[-1]
    return np.interp(values, edges[:-1], cdf)


def read_dicom_image(
    path: str | os.PathLike | pydicom.Dataset, *, voi: str = "window"
) -> DicomImage:
    """Read a single-frame grayscale DICOM as a radiology viewer shows it.

    ``voi="window"`` (the radiology reading, PS3.4 N.2.1.1): the Modality LUT (the Modality LUT
    Sequence, else Rescale Slope/Intercept) by ``pydicom.pixels.apply_modality_lut``, then the
    VOI LUT Sequence or the window (Window Center/Width with the VOI LUT Function: LINEAR,
    LINEAR_EXACT or SIGMOID; the first when there are several) by
    ``pydicom.pixels.apply_voi_lut``, scaled to [0, 1] by the VOI output range (the window's
    ``y_min..y_max`` that pydicom maps to; ``0..2^n - 1`` for a LUT whose largest entry has
    ``n`` bits); a file with neither is min-max scaled. ``voi="minmax"``: the Modality LUT,
    then min-max over the image. ``voi="stored"``: the stored values min-max scaled (the
    reference implementation's reading, which applies no LUT). Then MONOCHROME1 is inverted
    (``1 - v``; Presentation LUT Shape is not consulted), so that larger is always brighter.
    Bits above Bits Stored are ignored and signed values sign-extended (pydicom's decoding).

    Args:
        path: the DICOM file, or a dataset already read (with its pixel data).
        voi: ``"window"``, ``"minmax"`` or ``"stored"`` (:data:`READINGS`).

    Returns:
        The :class:`DicomImage`: display values, the reading applied, the pixel spacing.

    Raises:
        ValueError: not a single-frame grayscale image, or a window/LUT pydicom refuses (e.g. a
            Window Width below 1), naming the file and the attribute.
    """
    check_voi(voi)
    dataset = path if isinstance(path, pydicom.Dataset) else pydicom.dcmread(path)
    name = getattr(dataset, "filename", None) or "DICOM"
    rows, columns = int(dataset.get("Rows") or 0), int(dataset.get("Columns") or 0)
    if not rows or not columns:
        raise ValueError(f"{name}: DICOM header lacks Rows/Columns (no image in this file?)")
    frames = int(dataset.get("NumberOfFrames") or 1)
    samples = int(dataset.get("SamplesPerPixel") or 1)
    if frames != 1 or samples != 1:
        raise ValueError(
            f"{name}: expected a single-frame grayscale image, got {frames} frame(s) of "
            f"{samples} sample(s)"
        )
    pixels = dataset.pixel_array
    if pixels.ndim != 2:
        raise ValueError(
            f"{name}: expected a single-frame grayscale image, got pixel array {pixels.shape}"
        )
    invert = str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1"
    steps = []
    if voi == "stored":
        values, steps = pixels.astype(np.float64), ["stored values"]
    else:
        values, modality = _modality(pixels, dataset)
        steps.append(modality)
    windowed = None
    if voi == "window":
        windowed = _voi(values, dataset, name)
    if windowed is not None:
        values, step = windowed
        steps.append(step)
        if invert:
            values = 1.0 - values
    else:
        # the negation of MONOCHROME1 before the min-max is the reference's, bit for bit
        values = values.astype(np.float64)
        values = -values if invert else values
        low, high = values.min(), values.max()
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
        steps.append("min-max" if voi != "window" else "no VOI LUT or window in the file: min-max")
    if invert:
        steps.append("MONOCHROME1 inverted")
    spacing, attribute = _pixel_spacing(dataset, name)
    return DicomImage(values, ", ".join(steps), spacing, attribute)


def _modality(pixels: np.ndarray, dataset: pydicom.Dataset) -> tuple[np.ndarray, str]:
    """The Modality LUT's output, and what it was."""
    values = apply_modality_lut(pixels, dataset)
    if dataset.get("ModalityLUTSequence"):
        step = "modality LUT sequence"
    elif "RescaleSlope" in dataset and "RescaleIntercept" in dataset:
        step = (
            f"modality LUT (rescale slope {float(dataset.RescaleSlope):g}, "
            f"intercept {float(dataset.RescaleIntercept):g})"
        )
    else:
        return values, "no modality LUT"
    if np.issubdtype(values.dtype, np.floating) and np.array_equal(values, np.rint(values)):
        values = values.astype(np.int64)  # a VOI LUT indexes by integers (pydicom warns on floats)
    return values, step


def _voi(values: np.ndarray, dataset: pydicom.Dataset, name: str) -> tuple[np.ndarray, str] | None:
    """The VOI LUT or first window of ``dataset`` applied to the modality ``values``, scaled to
    [0, 1] by its output range, and what it was; ``None`` when the file has neither."""
    luts = dataset.get("VOILUTSequence") or []
    lut = luts[0] if luts else None
    has_lut = lut is not None and "LUTDescriptor" in lut and "LUTData" in lut
    has_window = all(dataset.get(k) not in (None, "") for k in ("WindowCenter", "WindowWidth"))
    if not has_lut and not has_window:
        return None
    source = dataset
    if has_lut and int(lut.LUTDescriptor[2]) == 8 and (lut.LUTDescriptor[0] or 2**16) > 256:
        # pydicom 3.0 indexes an 8-bit LUT with uint8 indices, which wrap past entry 255; the
        # same entries declared 16-bit are indexed right (the output range stays 8-bit below)
        item = copy.deepcopy(lut)
        item.LUTDescriptor = [*lut.LUTDescriptor[:2], 16]
        source = pydicom.Dataset()  # the VOI LUT alone, the caller's dataset left as it is
        source.VOILUTSequence = pydicom.Sequence([item])
        if hasattr(dataset, "file_meta"):
            source.file_meta = dataset.file_meta
        source.set_original_encoding(*dataset.original_encoding, dataset.original_character_set)
    try:
        out = apply_voi_lut(values, source, index=0, prefer_lut=True)
    except (ValueError, NotImplementedError) as err:
        raise ValueError(
            f"{name}: {err} (read it with voi='minmax', --voi minmax, to ignore its VOI)"
        ) from None
    out = out.astype(np.float64)
    if has_lut:
        # the bit depth of the LUT's largest entry, not the descriptor's: some devices (Agfa CRs)
        # declare 16 bits for 12-bit entries; Horos and Cornerstone read the entries too
        first, entries = int(lut.LUTDescriptor[1]), int(lut.LUTDescriptor[0]) or 2**16
        table = apply_voi_lut(np.arange(first, first + entries), source, prefer_lut=True)
        bits = max(1, int(table.max()).bit_length())
        low, high = 0.0, float(2**bits - 1)
        many = f" (first of {len(luts)})" if len(luts) > 1 else ""
        step = f"VOI LUT sequence{many}, {bits}-bit entries"
    else:
        # the output range pydicom maps the window onto (y_min, y_max of PS3.3 C.11.2.1.2)
        low, high = apply_voi_lut(np.array([-np.inf, np.inf]), dataset, prefer_lut=False)
        center, width = _first(dataset.WindowCenter), _first(dataset.WindowWidth)
        count = len(dataset.WindowCenter) if dataset["WindowCenter"].VM > 1 else 1
        function = str(dataset.get("VOILUTFunction") or "LINEAR").upper()
        many = f"first of {count}, " if count > 1 else ""
        step = f"window centre {center:g} width {width:g} ({many}{function})"
    return np.clip((out - low) / (high - low), 0.0, 1.0), step


def _first(value) -> float:
    return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)


def _pixel_spacing(
    dataset: pydicom.Dataset, name: str
) -> tuple[tuple[float, float] | None, str | None]:
    """``PixelSpacing`` (else ``ImagerPixelSpacing``) as ``(row, column)`` mm, and which; a value
    that is not two positive numbers is warned about (one line) and treated as absent."""
    for attribute in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            value = dataset.get(attribute)
            if value is None or value == "":
                continue
            spacing = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            spacing = ()
        if len(spacing) == 2 and all(np.isfinite(spacing)) and min(spacing) > 0:
            return (spacing[0], spacing[1]), attribute
        warnings.warn(
            f"{name}: {attribute} {dataset.get(attribute)!r} is not two positive numbers "
            "(row, column spacing in mm); positions in mm left out",
            stacklevel=2,
        )
    return None, None


def dicom_to_array(
    path: str | os.PathLike,
    size: int = 1024,
    conversion: DicomConversion = REFERENCE_CONVERSION,
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Read a single-frame grayscale DICOM as uint8 with the longer side at most ``size``.

    The file is read by :func:`read_dicom_image` with ``conversion.voi`` (display values in
    [0, 1], MONOCHROME1 inverted so bone is bright), optionally histogram-equalised, quantised to
    0..255, then shrunk keeping the aspect ratio when the longer side exceeds ``size`` (never
    enlarged), all as ``conversion`` says (default: the reference's recipe).

    Args:
        path: the DICOM file.
        size: the longest the longer side may be.
        conversion: the pixel recipe.

    Returns:
        ``(image, ratio, (original_height, original_width))``; ``ratio`` is ``size`` over the
        original longer side when shrunk, else 1.
    """
    return render(read_dicom_image(path, voi=conversion.voi).values, size, conversion)


def render(
    values: np.ndarray, size: int, conversion: DicomConversion
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Display ``values`` in [0, 1] as uint8 with the longer side at most ``size``: equalised,
    quantised and resized as ``conversion`` says (its ``voi`` is not used here); returns what
    :func:`dicom_to_array` does."""
    if conversion.equalize and values.max() > values.min():
        values = equalize_histogram(values)
    quantise = np.floor if conversion.floor else np.rint
    image = np.clip(quantise(values * 255.0), 0, 255).astype(np.uint8)
    height, width = image.shape
    if max(height, width) <= size:
        return image, 1.0, (height, width)
    ratio = size / max(height, width)
    fit = (lambda v: int(v * ratio)) if conversion.floor else (lambda v: round(v * ratio))
    new_size = (max(1, fit(width)), max(1, fit(height)))
    if (new_size[1], new_size[0]) == image.shape:
        return image, ratio, (height, width)
    if conversion.interpolation == "area":
        interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_CUBIC
    else:
        interpolation = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}[
            conversion.interpolation
        ]
    return cv2.resize(image, new_size, interpolation=interpolation), ratio, (height, width)


@dataclass
class ConversionReport:
    """What ``convert_folder`` did: counts, every file it could not convert with the reason, and
    every warning a file gave while converting (``(file, message)``, one per distinct message),
    and the reading applied (:data:`READINGS`)."""

    converted: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    reading: str = ""


def conversion_settings(size: int, conversion: DicomConversion) -> dict:
    """The settings ``conversion.json`` records: what decides the PNGs' pixels, and the reading
    in words (``reading``, from ``voi``)."""
    settings = {"size": size, "longer_side": "at most size", **dataclasses.asdict(conversion)}
    return {**settings, "reading": READINGS[conversion.voi]}


def _comparable(settings: dict) -> dict:
    """``settings`` without the words derived from them, a record from before ``voi`` was kept
    given the reading pylon then applied."""
    return {"voi": LEGACY_VOI, **{k: v for k, v in settings.items() if k != "reading"}}


def describe_settings(settings: dict) -> str:
    """``--size 1024, equalised, linear resize, truncated levels, --voi stored`` for messages."""
    return (
        f"--size {settings.get('size')}, "
        f"{'equalised' if settings.get('equalize') else 'not equalised'}, "
        f"{settings.get('interpolation')} resize, "
        f"{'truncated' if settings.get('floor') else 'rounded'} levels, "
        f"--voi {settings.get('voi', LEGACY_VOI)}"
        + ("" if settings.get("longer_side") == "at most size" else ", enlarging small images")
    )


class _NoteHandler(logging.Handler):
    def __init__(self, notes: list[str]):
        super().__init__(logging.WARNING)
        self.notes = notes

    def emit(self, record: logging.LogRecord) -> None:
        self.notes.append(record.getMessage())


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """Collect what is said while one file converts instead of letting it reach the terminal:
    Python warnings, pydicom's log and whatever C libraries write to file descriptor 2 (libpng,
    OpenJPEG). Yields the list that receives the messages when the block ends: pydicom's log,
    then Python warnings, then the C libraries' lines, one per line, repeats dropped."""
    notes: list[str] = []
    logger = logging.getLogger("pydicom")
    saved_handlers, saved_propagate = logger.handlers[:], logger.propagate
    logger.handlers, logger.propagate = [_NoteHandler(notes)], False
    sys.stderr.flush()
    sink = tempfile.TemporaryFile()
    try:
        saved_fd = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing to capture there
        saved_fd = None
    else:
        os.dup2(sink.fileno(), 2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield notes
            finally:
                notes.extend(str(w.message) for w in caught)
    finally:
        if saved_fd is not None:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
        logger.handlers, logger.propagate = saved_handlers, saved_propagate
        sink.seek(0)
        notes.extend(sink.read().decode(errors="replace").splitlines())
        sink.close()
        unique = dict.fromkeys(" ".join(n.split()) for n in notes)
        notes[:] = [n for n in unique if n]


def find_dicoms(src: Path) -> list[Path]:
    """The ``*.dicom``/``*.dcm`` files under ``src``, sorted (``[src]`` for one such file).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: ``src`` is a file without a DICOM suffix.
    """
    if src.is_file():
        if src.suffix.lower() not in DICOM_SUFFIXES:
            raise ValueError(
                f"SRC {src} is a file without a .dicom/.dcm suffix; expected a DICOM file or a "
                "folder of them"
            )
        return [src]
    if not src.is_dir():
        raise FileNotFoundError(f"DICOM source not found: {src} (expected a folder or a file)")
    return sorted(p for p in src.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES and p.is_file())


def image_id_for(path: Path, src: Path) -> str:
    """The id of a converted DICOM: its path below ``src`` without the suffix, ``/``-separated
    (``train/abc.dicom`` -> ``abc``; ``a/scan.dcm`` -> ``a/scan``). The PNG is ``<id>.png``."""
    return path.relative_to(src).with_suffix("").as_posix()


def _check_unique_ids(files: list[Path], src: Path) -> None:
    seen: dict[str, Path] = {}
    for path in files:
        image_id = image_id_for(path, src)
        if image_id in seen:
            raise ValueError(
                f"{seen[image_id]} and {path} would both be converted to {image_id}.png "
                "(same path without the suffix); rename or move one of them"
            )
        seen[image_id] = path


def _convert_one(src: Path, dst: Path, image_id: str, size: int, conversion) -> dict:
    # the pixel limit of `pylon predict`, from the header before any decoding
    header = pydicom.dcmread(src, stop_before_pixels=True)
    rows, columns = int(header.get("Rows") or 0), int(header.get("Columns") or 0)
    refuse_too_large(src, rows, columns, what="DICOM")
    image, ratio, (height, width) = dicom_to_array(src, size, conversion)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    try:
        with atomic_path(dst) as tmp:
            tmp.write_bytes(encoded.tobytes())
    except OSError as err:  # a full disk says "[Errno 28]" without naming the file
        raise OSError(err.errno, f"cannot write: {err.strerror}", str(dst)) from None
    return {
        "image_id": image_id,
        "ratio": ratio,
        "original_height": height,
        "original_width": width,
        "height": image.shape[0],
        "width": image.shape[1],
    }


def _safe_convert(src: Path, dst: Path, image_id: str, size: int, conversion):
    row, reason = None, ""
    with captured_warnings() as notes:
        try:
            row = _convert_one(src, dst, image_id, size, conversion)
        except Exception as err:  # noqa: BLE001  every failure is reported, none stops the batch
            reason = f"{type(err).__name__}: {err}"
            if isinstance(err, OSError) and err.filename is not None:
                reason = f"{type(err).__name__}: {err.filename}: {err.strerror}"
    return row, reason, notes


def _run(jobs: list[tuple[Path, Path, str]], size: int, conversion, workers: int) -> Iterator:
    if workers <= 1:
        for src, dst, image_id in jobs:
            yield src, _safe_convert(src, dst, image_id, size, conversion)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_safe_convert, s, d, i, size, conversion): s for s, d, i in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _check_writable(dst: Path) -> None:
    """Create ``dst`` and write a probe file there, so that an unusable DST fails once, up front,
    instead of once per file."""
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"DST {dst} is not a folder")
    try:
        dst.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=dst):
            pass
    except OSError as err:
        raise OSError(
            err.errno, f"cannot write to the output folder DST ({err.strerror})", str(dst)
        ) from None


def _read_settings(dst: Path) -> dict | None:
    path = dst / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{path}: unreadable ({err}); delete it and rerun with --overwrite"
        ) from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: expected a JSON object; delete it and rerun with --overwrite")
    return settings


def _settings_mismatch(rows: dict, recorded: dict | None, requested: dict, dst: Path) -> str:
    """Why the PNGs in ``dst`` (ratio ``rows``, settings ``recorded``) do not match ``requested``;
    ``""`` when they do. A ``ratios.csv`` from before settings were recorded (``recorded`` is
    ``None``) matches when every row's longer side is what ``--size`` gives (within a pixel of
    truncation); its recipe cannot be checked."""
    if recorded is not None:
        if _comparable(recorded) == _comparable(requested):
            return ""
        return (
            f"{dst} holds PNGs converted with {describe_settings(recorded)} "
            f"({dst / SETTINGS_FILE}); this run asks for {describe_settings(requested)}"
        )
    size = requested["size"]
    for image_id, row in rows.items():
        longer = max(int(row["height"]), int(row["width"]))
        expected = min(size, max(int(row["original_height"]), int(row["original_width"])))
        if not expected - 1 <= longer <= expected:
            return (
                f"{dst / RATIO_FILE} was written without a record of its settings and its row "
                f"{image_id} ({row['height']}x{row['width']} from {row['original_height']}x"
                f"{row['original_width']}) does not match --size {size}"
            )
    return ""


def convert_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    size: int = 1024,
    conversion: DicomConversion = REFERENCE_CONVERSION,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert every ``*.dicom``/``*.dcm`` under ``src`` to ``dst/<relative path>.png``.

    Args:
        src: folder searched recursively, or one DICOM file.
        dst: output folder (created); it receives the PNGs, ``ratios.csv`` and
            ``conversion.json`` (the settings below). Checked writable before any work.
        size: the longest the longer side may be: larger images are shrunk, smaller ones kept.
            A file over the pixel limit of ``pylon predict`` (:func:`pylon.data.images.max_pixels`)
            is refused from its header and listed as failed.
        conversion: the pixel recipe (default the reference's: its reading of the stored
            values, equalised, linear resize).
        workers: worker processes.
        overwrite: reconvert files whose PNG and ratio row already exist (else skipped); also
            what lets a run use other settings than those recorded in ``dst`` (refused when
            ``dst`` holds files of other settings that are not in ``src``).
        progress: report progress (a bar in a terminal, plain lines in a log, as
            :class:`pylon.progress.Progress`).

    Raises:
        ValueError: other settings than those recorded (without ``overwrite``), no DICOM files,
            two inputs with one output name.
        OSError: ``src`` missing or ``dst`` not writable, naming the path.

    Returns:
        A :class:`ConversionReport`. Each input gets one PNG and one row of ``dst/ratios.csv``
        (``image_id, ratio, original_height, original_width, height, width``), keyed by
        :func:`image_id_for`; two inputs that would share an id (``x.dcm`` and ``x.dicom``) are
        refused before anything is written. The CSV is rewritten atomically at the end, keeping
        the rows of earlier runs.
    """
    src, dst = Path(src), Path(dst)
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    files = find_dicoms(src)
    if not files:
        raise ValueError(f"no *.dicom or *.dcm files found under {src}")
    root = src.parent if src.is_file() else src
    _check_unique_ids(files, root)
    _check_writable(dst)
    ratio_path = dst / RATIO_FILE
    rows = {}
    if ratio_path.is_file():
        previous = pd.read_csv(ratio_path, dtype={"image_id": str})
        if list(previous.columns) != RATIO_COLUMNS:
            raise ValueError(
                f"{ratio_path}: expected columns {RATIO_COLUMNS}, got {list(previous.columns)}"
            )
        rows = {r["image_id"]: r for r in previous.to_dict("records")}
    requested = conversion_settings(size, conversion)
    mismatch = _settings_mismatch(rows, _read_settings(dst), requested, dst) if rows else ""
    if mismatch and not overwrite:
        raise ValueError(
            f"{mismatch}: rerun with the recorded settings, use another DST, or add --overwrite "
            "to reconvert every file with the new ones"
        )
    if mismatch:
        others = sorted(set(rows) - {image_id_for(path, root) for path in files})
        if others:
            raise ValueError(
                f"{mismatch}, and {len(others)} of its converted file(s) are not in {src} "
                f"(first: {others[0]}): --overwrite would leave them beside the new ones; use "
                "another DST"
            )
        rows = {}  # all reconverted: no row of the earlier settings may survive a failure
    write_text_atomic(dst / SETTINGS_FILE, json.dumps(requested, indent=1) + "\n")
    report = ConversionReport(reading=READINGS[conversion.voi])
    jobs = []
    for path in files:
        image_id = image_id_for(path, root)
        out = dst / f"{image_id}.png"
        if not overwrite and out.is_file() and image_id in rows:
            report.skipped += 1
        else:
            jobs.append((path, out, image_id))
    try:
        with Progress(
            "converting DICOM files", total=len(jobs), unit="file", enabled=progress
        ) as bar:
            for path, (row, reason, notes) in _run(jobs, size, conversion, workers):
                report.warnings.extend((str(path), note) for note in notes)
                if row is None:
                    report.failed.append((str(path), reason))
                else:
                    rows[row["image_id"]] = row
                    report.converted += 1
                bar.advance()
    finally:
        if rows:
            frame = pd.DataFrame(list(rows.values()), columns=RATIO_COLUMNS)
            try:
                write_csv_atomic(frame.sort_values("image_id"), ratio_path)
            except OSError as err:
                raise OSError(err.errno, f"cannot write: {err.strerror}", str(ratio_path)) from None
    report.failed.sort()
    return report
