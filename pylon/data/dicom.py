"""DICOM to 8-bit PNG conversion (VinDr-CXR recipe) with a per-image resize-ratio CSV.

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


def dicom_to_array(path: str | os.PathLike, size: int = 1024, equalize: bool = False):
    """Read a single-frame grayscale DICOM as uint8 with the longer side resized to ``size``.

    MONOCHROME1 is inverted (so bone is bright), values are min-max normalised to 0..255,
    optionally histogram-equalised, then resized keeping the aspect ratio.
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
    image = np.rint(scaled * 255.0).astype(np.uint8)
    if equalize:
        image = cv2.equalizeHist(image)
    height, width = image.shape
    ratio = size / max(height, width)
    new_size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
    interpolation = cv2.INTER_AREA if ratio < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, new_size, interpolation=interpolation), ratio, (height, width)


@dataclass
class ConversionReport:
    """What ``convert_folder`` did: counts and every file it could not convert, with the reason."""

    converted: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)


def find_dicoms(src: Path) -> list[Path]:
    return sorted(p for p in src.rglob("*") if p.suffix.lower() in DICOM_SUFFIXES and p.is_file())


def _convert_one(src: Path, dst: Path, size: int, equalize: bool) -> dict:
    image, ratio, (height, width) = dicom_to_array(src, size, equalize)
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError("PNG encoding failed")
    with atomic_path(dst) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return {
        "image_id": src.stem,
        "ratio": ratio,
        "original_height": height,
        "original_width": width,
        "height": image.shape[0],
        "width": image.shape[1],
    }


def _safe_convert(src: Path, dst: Path, size: int, equalize: bool) -> tuple[dict | None, str]:
    try:
        return _convert_one(src, dst, size, equalize), ""
    except Exception as err:  # noqa: BLE001  every failure is reported, none stops the batch
        return None, f"{type(err).__name__}: {err}"


def _run(jobs: list[tuple[Path, Path]], size: int, equalize: bool, workers: int) -> Iterator:
    if workers <= 1:
        for src, dst in jobs:
            yield src, _safe_convert(src, dst, size, equalize)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_safe_convert, s, d, size, equalize): s for s, d in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def convert_folder(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    size: int = 1024,
    equalize: bool = False,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
) -> ConversionReport:
    """Convert every ``*.dicom``/``*.dcm`` under ``src`` to ``dst/<relative path>.png``.

    Files whose PNG and ratio row already exist are skipped unless ``overwrite``. The ratio CSV
    ``dst/ratios.csv`` (``image_id, ratio, original_height, original_width, height, width``) is
    rewritten atomically at the end, keeping the rows of earlier runs.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"DICOM source folder not found: {src}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    files = find_dicoms(src)
    if not files:
        raise ValueError(f"no *.dicom or *.dcm files found under {src}")
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
        out = (dst / path.relative_to(src)).with_suffix(".png")
        if not overwrite and out.is_file() and path.stem in rows:
            report.skipped += 1
        else:
            jobs.append((path, out))
    try:
        with Progress(disable=not progress) as bar:
            task = bar.add_task(f"converting {len(jobs)} DICOM files", total=len(jobs))
            for path, (row, reason) in _run(jobs, size, equalize, workers):
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
