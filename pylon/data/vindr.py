"""VinDr-CXR (Kaggle release) from ``train.csv`` and the PNGs written by ``pylon convert-dicom``
(or by the reference implementation's conversion script), with seeded or reference splits."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pylon.data.base import BoxDataset, Record, check_box, parse_fractions, seeded_split
from pylon.data.dicom import RATIO_COLUMNS, RATIO_FILE
from pylon.data.images import image_size
from pylon.data.tables import find_folder, read_csv_checked, read_label_table

# Index = the Kaggle ``class_id``; "No finding" (class_id 14) is the 15th output by default.
VINDR_CLASSES: tuple[str, ...] = (
    "Aortic enlargement",
    "Atelectasis",
    "Calcification",
    "Cardiomegaly",
    "Consolidation",
    "ILD",
    "Infiltration",
    "Lung Opacity",
    "Nodule/Mass",
    "Other lesion",
    "Pleural effusion",
    "Pleural thickening",
    "Pneumothorax",
    "Pulmonary fibrosis",
    "No finding",
)
NO_FINDING = 14
TRAIN_COLUMNS = ["image_id", "class_name", "class_id", "rad_id", "x_min", "y_min", "x_max", "y_max"]
VINDR_SPLITS = ("train", "val", "test", "all")
# The reference's split files ``vin_cls_<version>_<split>.csv``: train/val/test fractions.
REFERENCE_SPLIT_VERSIONS = {"v1": "50/20/30", "v2": "10/20/70", "v3": "70/10/20"}
# The reference's conversion script writes ``<png folder>_ratio.csv`` with these columns.
REFERENCE_RATIO_COLUMNS = ["image_id", "resize_ratio"]

# Per image: PNG size / original size, and (original_h, original_w, png_h, png_w) when known.
Ratio = tuple[float, tuple[int, int, int, int] | None]


class VinDrDataset(BoxDataset):
    """VinDr-CXR under ``root``: ``train.csv`` plus ``images_dir`` (default ``train_png``) holding
    ``<image_id>.png`` and a ratio file: ``ratios.csv`` inside it as written by
    ``pylon convert-dicom``, or the reference's ``<images_dir>_ratio.csv`` beside it
    (``image_id,resize_ratio``); ``ratio_file`` (relative to ``root``) names another.

    Labels are the union over radiologists; "No finding" is positive exactly when no radiologist
    marked a finding (drop it with ``include_no_finding=False`` for 14 outputs). Boxes of all
    radiologists are kept, scaled by each image's recorded resize ratio; as in the reference,
    each scaled ``x, y, w, h`` is truncated to an integer (``truncate_boxes=False`` keeps the
    exact floats: a box then moves or grows by less than one PNG pixel). Splits are seeded and
    image-level: ``split_fractions`` "70/10/20" (default), "50/20/30", "10/20/70" or any a/b/c.
    With ``split_files`` (a folder, absolute or relative to ``root``), the split and its labels
    come from the reference's ``vin_cls_<split_version>_<split>.csv`` (``split_version`` v1
    50/20/30, v2 10/20/70, v3 70/10/20, default v3).
    """

    splits: tuple[str, ...] = VINDR_SPLITS  # the split names it reads

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        size: int = 256,
        augment: bool = False,
        *,
        images_dir: str | os.PathLike = "train_png",
        ratio_file: str | os.PathLike | None = None,
        split_fractions: str | tuple[float, float, float] = "70/10/20",
        seed: int = 0,
        split_files: str | os.PathLike | None = None,
        split_version: str | None = None,
        include_no_finding: bool = True,
        truncate_boxes: bool = True,
        in_channels: int = 1,
        **options: Any,
    ):
        if root is None:
            raise ValueError("vindr: root must be the folder holding train.csv")
        if split not in VINDR_SPLITS:
            raise ValueError(f"vindr: unknown split {split!r}; expected one of {VINDR_SPLITS}")
        root = Path(root)
        images = root / images_dir
        fractions = parse_fractions(split_fractions, "vindr split_fractions")
        class_names = VINDR_CLASSES if include_no_finding else VINDR_CLASSES[:NO_FINDING]
        ratio_path = _find_ratio_file(root, Path(images_dir), ratio_file)
        ratios = _read_ratios(ratio_path)
        train_csv = root / "train.csv"
        labels, boxes, first_line = _read_annotations(train_csv)
        if split_files is not None:
            split_file = _split_file(root, split_files, split_version, split)
            table = read_label_table(split_file, VINDR_CLASSES)
            for image_id, line in zip(table.ids, table.lines, strict=True):
                if image_id not in labels:
                    raise ValueError(
                        f"{split_file}, line {line}: image {image_id!r} has no row in {train_csv}"
                    )
                if not (images / f"{image_id}.png").is_file():
                    raise FileNotFoundError(
                        f"{split_file}, line {line}: image {image_id!r} not found at "
                        f"{images / f'{image_id}.png'}"
                    )
            ids = table.ids
            labels = dict(zip(table.ids, table.labels, strict=True))  # the reference's labels
        else:
            if split_version is not None:
                raise ValueError("vindr: split_version chooses among split_files; give both")
            ids = sorted(labels)
            if split != "all":
                ids = seeded_split(ids, fractions, seed)[("train", "val", "test").index(split)]
        records = []
        for image_id in ids:
            vector = labels[image_id].copy()
            if split_files is None:
                vector[NO_FINDING] = float(not vector[:NO_FINDING].any())
            if image_id not in ratios:
                raise ValueError(
                    f"{train_csv}, line {first_line[image_id]}: image {image_id!r} has no row in "
                    f"the ratio CSV {ratio_path}; was it converted with `pylon convert-dicom`?"
                )
            path = images / f"{image_id}.png"
            scaled = _scale_boxes(
                boxes.get(image_id, []), ratios[image_id], path, train_csv, truncate_boxes
            )
            kept = [b for b in scaled if b[4] < len(class_names)]
            records.append(Record(image_id, path, vector[: len(class_names)], kept))
        super().__init__(
            records,
            class_names,
            name="vindr",
            split=split,
            size=size,
            augment=augment,
            kind="xray",
            in_channels=in_channels,
            **options,
        )


def _split_file(
    root: Path, split_files: str | os.PathLike, version: str | None, split: str
) -> Path:
    version = version or "v3"
    if version not in REFERENCE_SPLIT_VERSIONS:
        raise ValueError(
            f"vindr: unknown split_version {version!r}; expected one of "
            f"{', '.join(f'{v} ({f})' for v, f in REFERENCE_SPLIT_VERSIONS.items())}"
        )
    if split == "all":
        raise ValueError("vindr: split 'all' cannot be read from split_files; use train/val/test")
    return find_folder(root, split_files, "vindr: split_files") / f"vin_cls_{version}_{split}.csv"


def _find_ratio_file(root: Path, images_dir: Path, ratio_file: str | os.PathLike | None) -> Path:
    if ratio_file is not None:
        path = root / ratio_file
        if not path.is_file():
            raise FileNotFoundError(f"vindr: ratio_file {path} not found")
        return path
    candidates = [root / images_dir / RATIO_FILE, root / f"{images_dir}_ratio.csv"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"vindr: no ratio file found (looked for {' and '.join(map(str, candidates))}); "
        "convert the DICOMs first with `pylon convert-dicom SRC DST`"
    )


def _read_ratios(path: Path) -> dict[str, Ratio]:
    """Ratios from our ``ratios.csv`` (with sizes) or the reference's ``image_id,resize_ratio``."""
    frame = read_csv_checked(path, ["image_id"], dtype={"image_id": str})
    if set(RATIO_COLUMNS) <= set(frame.columns):
        return {
            r.image_id: (
                float(r.ratio),
                (int(r.original_height), int(r.original_width), int(r.height), int(r.width)),
            )
            for r in frame.itertuples(index=False)
        }
    if set(REFERENCE_RATIO_COLUMNS) <= set(frame.columns):
        return {r.image_id: (float(r.resize_ratio), None) for r in frame.itertuples(index=False)}
    raise ValueError(
        f"{path}: expected the columns {RATIO_COLUMNS} (pylon convert-dicom) or "
        f"{REFERENCE_RATIO_COLUMNS} (the reference's conversion); found {list(frame.columns)}"
    )


def _scale_boxes(entries: list, ratio: Ratio, png: Path, train_csv: Path, truncate: bool) -> list:
    """Boxes from DICOM pixels to PNG pixels, checked in both (PNG size read when not recorded);
    ``truncate``: each scaled ``x, y, w, h`` truncated to an integer, as the reference does."""
    if not entries:
        return []
    factor, sizes = ratio
    height, width = image_size(png) if sizes is None else sizes[2:]
    out = []
    for line, x0, y0, x1, y1, cls in entries:
        where = f"{train_csv}, line {line}"
        box = (x0, y0, x1 - x0, y1 - y0)
        if sizes is not None:
            box = check_box(box, sizes[0], sizes[1], where)
        scaled = tuple(float(int(v * factor)) if truncate else v * factor for v in box)
        out.append((*check_box(scaled, height, width, where), cls))
    return out


def _read_annotations(
    path: Path,
) -> tuple[dict[str, np.ndarray], dict[str, list], dict[str, int]]:
    """Multi-hot labels (15), boxes ``(line, x_min, y_min, x_max, y_max, class)`` in DICOM pixels
    and the first line of each image id, validated row by row."""
    frame = read_csv_checked(path, TRAIN_COLUMNS, dtype={"image_id": str, "class_name": str})
    labels: dict[str, np.ndarray] = {}
    boxes: dict[str, list] = {}
    first_line: dict[str, int] = {}
    coords = frame[["x_min", "y_min", "x_max", "y_max"]].to_numpy(dtype=float, na_value=np.nan)
    for row, (image_id, name, class_id) in enumerate(
        zip(frame["image_id"], frame["class_name"], frame["class_id"], strict=True)
    ):
        line = row + 2
        where = f"{path}, line {line}"
        if name not in VINDR_CLASSES:
            raise ValueError(
                f"{where}, column 'class_name': unknown class {name!r}; "
                f"expected one of {', '.join(VINDR_CLASSES)}"
            )
        cls = VINDR_CLASSES.index(name)
        if str(class_id).strip() != str(cls):
            raise ValueError(
                f"{where}: class_id {class_id!r} does not match {name!r} (expected {cls})"
            )
        first_line.setdefault(image_id, line)
        vector = labels.setdefault(image_id, np.zeros(len(VINDR_CLASSES), dtype=np.float32))
        if cls == NO_FINDING:
            continue
        vector[cls] = 1.0
        if np.isnan(coords[row]).any():
            raise ValueError(f"{where}: finding {name!r} needs x_min, y_min, x_max, y_max")
        boxes.setdefault(image_id, []).append((line, *coords[row], cls))
    return labels, boxes, first_line
