"""VinDr-CXR (Kaggle release) from ``train.csv`` and the PNGs written by ``pylon convert-dicom``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pylon.data.base import BoxDataset, Record, check_box, parse_fractions, seeded_split
from pylon.data.dicom import RATIO_COLUMNS, RATIO_FILE
from pylon.data.nih import read_csv_checked

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


class VinDrDataset(BoxDataset):
    """VinDr-CXR under ``root``: ``train.csv`` plus ``images_dir`` (default ``train_png``) holding
    ``<image_id>.png`` and ``ratios.csv`` as written by ``pylon convert-dicom``.

    Labels are the union over radiologists; "No finding" is positive exactly when no radiologist
    marked a finding (drop it with ``include_no_finding=False`` for 14 outputs). Boxes of all
    radiologists are kept, scaled by each image's recorded resize ratio. Splits are seeded and
    image-level: ``split_fractions`` "70/10/20" (default), "50/20/30", "10/20/70" or any a/b/c.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        size: int = 256,
        augment: bool = False,
        *,
        images_dir: str | os.PathLike = "train_png",
        split_fractions: str | tuple[float, float, float] = "70/10/20",
        seed: int = 0,
        include_no_finding: bool = True,
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
        ratios = _read_ratios(images / RATIO_FILE)
        labels, boxes = _read_annotations(root / "train.csv", ratios)
        ids = sorted(labels)
        if split != "all":
            ids = seeded_split(ids, fractions, seed)[("train", "val", "test").index(split)]
        records = []
        for image_id in ids:
            vector = labels[image_id]
            if include_no_finding:
                vector[NO_FINDING] = float(not vector[:NO_FINDING].any())
            else:
                vector = vector[:NO_FINDING]
            kept = [b for b in boxes.get(image_id, []) if b[4] < len(class_names)]
            records.append(Record(image_id, images / f"{image_id}.png", vector, kept))
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


def _read_ratios(path: Path) -> dict[str, tuple[float, int, int, int, int]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"vindr: {path} not found; convert the DICOMs first with `pylon convert-dicom SRC DST`"
        )
    frame = read_csv_checked(path, RATIO_COLUMNS, dtype={"image_id": str})
    return {
        r.image_id: (
            float(r.ratio),
            int(r.original_height),
            int(r.original_width),
            int(r.height),
            int(r.width),
        )
        for r in frame.itertuples(index=False)
    }


def _read_annotations(path: Path, ratios: dict) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    """Multi-hot labels (15) and boxes in PNG pixels per image id, validated row by row."""
    frame = read_csv_checked(path, TRAIN_COLUMNS, dtype={"image_id": str, "class_name": str})
    labels: dict[str, np.ndarray] = {}
    boxes: dict[str, list] = {}
    coords = frame[["x_min", "y_min", "x_max", "y_max"]].to_numpy(dtype=float, na_value=np.nan)
    for row, (image_id, name, class_id) in enumerate(
        zip(frame["image_id"], frame["class_name"], frame["class_id"], strict=True)
    ):
        where = f"{path}, line {row + 2}"
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
        if image_id not in ratios:
            raise ValueError(
                f"{where}: image {image_id!r} has no row in the ratio CSV; "
                "was it converted with `pylon convert-dicom`?"
            )
        vector = labels.setdefault(image_id, np.zeros(len(VINDR_CLASSES), dtype=np.float32))
        if cls == NO_FINDING:
            continue
        vector[cls] = 1.0
        x0, y0, x1, y1 = coords[row]
        if np.isnan(coords[row]).any():
            raise ValueError(f"{where}: finding {name!r} needs x_min, y_min, x_max, y_max")
        ratio, orig_h, orig_w, height, width = ratios[image_id]
        x, y, w, h = check_box((x0, y0, x1 - x0, y1 - y0), orig_h, orig_w, where)
        scaled = check_box((x * ratio, y * ratio, w * ratio, h * ratio), height, width, where)
        boxes.setdefault(image_id, []).append((*scaled, cls))
    return labels, boxes
