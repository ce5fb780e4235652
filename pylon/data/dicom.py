"""DICOM to 8-bit PNG conversion (VinDr-CXR recipe) with a per-image resize-ratio CSV.

The default recipe is the reference implementation's (histogram equalisation, linear resize);
``PLAIN_CONVERSION`` keeps the stored contrast and resizes with INTER_AREA.

Compressed transfer syntaxes decode through pydicom's pixel-data plugins (pylibjpeg-libjpeg,
-openjpeg, -rle), which are declared dependencies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pydicom
from rich.progress import Progress

from pylon.io import atomic_path, write_csv_atomic

RATIO_FILE = "ratios.csv"
RATIO_COLUMNS = ["image_id", "ratio", "original_height", "original_width", "height", "width"]
DICOM_SUFFIXES = (".dicom", ".dcm")
INTERPOLATIONS = ("linear", "area", "cubic")


@dataclass(frozen=True)
class DicomConversion:
    """How DICOM pixels become an 8-bit image (after inversion and min-max scaling).

    ``equalize``: histogram equalisation of the scaled values (256 bins, the CDF interpolated
    at the bins' left edges, as the reference's script). ``interpolation``: ``linear``
    (OpenCV's default, the reference), ``area`` (INTER_AREA when shrinking, cubic when
    enlarging) or ``cubic``. ``floor``: pixel levels and output sizes are truncated to integers
    as the reference does (``astype``); otherwise rounded to the nearest.
    """

    equalize: bool = True
    interpolation: str = "linear"
    floor: bool = True

    def __post_init__(self):
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"unknown interpolation {self.interpolation!r}; expected one of {INTERPOLATIONS}"
            )


# The reference implementation's scripts/convert_dcm_to_png.py, and pylon's earlier default.
REFERENCE_CONVERSION = DicomConversion()
PLAIN_CONVERSION = DicomConversion(equalize=False, interpolation="area", floor=False)


def equalize_histogram(values: np.ndarray, bins: int = 256) -> np.ndarray:
    """Histogram equalisation of float ``values`` in [0, 1] (the reference's definition):
    the normalised cumulative histogram of ``bins`` equal bins, linearly interpolated at the
    bins' left edges, scaled to the maximum value."""
    counts, edges = np.histogram(values, bins)
    cdf = np.cumsum(counts, dtype=np.float64)
    cdf = values.max() * cdf / cdf[-1]
    return np.interp(values, edges[:-1], cdf)


def dicom_to_array(
    path: str | os.PathLike, size: int = 1024, conversion: DicomConversion = REFERENCE_CONVERSION
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Read a single-frame grayscale DICOM as uint8 with the longer side resized to ``size``.

    MONOCHROME1 is inverted (so bone is bright), values are min-max normalised to [0, 1],
    optionally histogram-equalised, quantised to 0..255, then resized keeping the aspect ratio,
    all as ``conversion`` says (default: the reference's recipe).
    Returns ``(image, ratio, (original_height, original_width))``.
    """
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array
    if pixels.ndim != 2:
        raise ValueError(f"expected a single-frame grayscale image, got pixel array {pixels.shape}")
    values = pixels.astype(np.float64)
    if str(dataset.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        values = -values
    low, high = values.min(), values.max()
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if conversion.equalize and high > low:
        scaled = equalize_histogram(scaled)
    quantise = np.floor if conversion.floor else np.rint
    image = np.clip(quantise(scaled * 255.0), 0, 255).astype(np.uint8)
    height, width = image.shape
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
    """What ``convert_folder`` did: counts and every file it could not convert, with the reason."""

    converted: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def find_dicoms(src: Path) -> list[Path]:
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
    image, ratio, (height, width) = dicom_to_array(src, size, conversion)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    with atomic_path(dst) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return {
        "image_id": image_id,
        "ratio": ratio,
        "original_height": height,
        "original_width": width,
        "height": image.shape[0],
        "width": image.shape[1],
    }


def _safe_convert(src: Path, dst: Path, image_id: str, size: int, conversion):
    try:
        return _convert_one(src, dst, image_id, size, conversion), ""
    except Exception as err:  # noqa: BLE001  every failure is reported, none stops the batch
        return None, f"{type(err).__name__}: {err}"


def _run(jobs: list[tuple[Path, Path, str]], size: int, conversion, workers: int) -> Iterator:
    if workers <= 1:
        for src, dst, image_id in jobs:
            yield src, _safe_convert(src, dst, image_id, size, conversion)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_safe_convert, s, d, i, size, conversion): s for s, d, i in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


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
        src: folder searched recursively.
        dst: output folder; it receives the PNGs and ``ratios.csv``.
        size: length of the longer side after resizing.
        conversion: the pixel recipe (default the reference's: equalised, linear resize).
        workers: worker processes.
        overwrite: reconvert files whose PNG and ratio row already exist (else skipped).
        progress: show a progress bar.
    Returns:
        A :class:`ConversionReport`. Each input gets one PNG and one row of ``dst/ratios.csv``
        (``image_id, ratio, original_height, original_width, height, width``), keyed by
        :func:`image_id_for`; two inputs that would share an id (``x.dcm`` and ``x.dicom``) are
        refused before anything is written. The CSV is rewritten atomically at the end, keeping
        the rows of earlier runs.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"DICOM source folder not found: {src}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    files = find_dicoms(src)
    if not files:
        raise ValueError(f"no *.dicom or *.dcm files found under {src}")
    _check_unique_ids(files, src)
    ratio_path = dst / RATIO_FILE
    rows = {}
    if ratio_path.is_file():
        previous = pd.read_csv(ratio_path, dtype={"image_id": str})
        if list(previous.columns) != RATIO_COLUMNS:
            raise ValueError(
                f"{ratio_path}: expected columns {RATIO_COLUMNS}, got {list(previous.columns)}"
            )
        rows = {r["image_id"]: r for r in previous.to_dict("records")}
    report = ConversionReport()
    jobs = []
    for path in files:
        image_id = image_id_for(path, src)
        out = dst / f"{image_id}.png"
        if not overwrite and out.is_file() and image_id in rows:
            report.skipped += 1
        else:
            jobs.append((path, out, image_id))
    try:
        with Progress(disable=not progress) as bar:
            task = bar.add_task(f"converting {len(jobs)} DICOM files", total=len(jobs))
            for path, (row, reason) in _run(jobs, size, conversion, workers):
                if row is None:
                    report.failed.append((str(path), reason))
                else:
                    rows[row["image_id"]] = row
                    report.converted += 1
                bar.advance(task)
    finally:
        if rows:
            frame = pd.DataFrame(list(rows.values()), columns=RATIO_COLUMNS)
            write_csv_atomic(frame.sort_values("image_id"), ratio_path)
    return report
