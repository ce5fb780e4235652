"""Bring-your-own data: a CSV of image paths and 0/1 label columns, optional NIH-format box file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pylon.data.base import BoxDataset, Record, parse_fractions, seeded_split
from pylon.data.nih import attach_boxes, read_box_file, read_csv_checked
from pylon.data.transforms import TransformKind


class CSVDataset(BoxDataset):
    """Images listed in a CSV: ``image_column`` holds paths (relative to the CSV's folder unless
    absolute), every other column except ``split_column`` is a 0/1 label (or give
    ``label_columns``). The class names are the label column names.

    ``root`` is the CSV file or the folder containing ``csv`` (default ``labels.csv``). With a
    ``split`` column, the dataset keeps the rows whose value equals ``split``; without one,
    splits ``train/val/test`` are drawn with ``split_fractions`` (default "80/10/10") and
    ``seed``. ``split="all"`` keeps every row. ``boxes`` names a box CSV in the NIH format
    (``Image Index,Finding Label,Bbox [x,y,w,h]``) whose ``Image Index`` is the value in
    ``image_column`` (or its file name) and whose labels are class names.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        size: int = 256,
        augment: bool = False,
        *,
        csv: str | os.PathLike = "labels.csv",
        image_column: str = "image",
        label_columns: Sequence[str] | None = None,
        split_column: str = "split",
        split_fractions: str | tuple[float, float, float] = "80/10/10",
        seed: int = 0,
        boxes: str | os.PathLike | None = None,
        kind: TransformKind = "xray",
        in_channels: int | None = None,
        **options: Any,
    ):
        if root is None:
            raise ValueError("csv: root must be the label CSV or the folder containing it")
        root = Path(root)
        path = root if root.is_file() else root / csv
        frame = read_csv_checked(
            path, [image_column, *(label_columns or [])], dtype={image_column: str}
        )
        has_split = split_column in frame.columns
        if label_columns is None:
            label_columns = [c for c in frame.columns if c not in (image_column, split_column)]
        if not label_columns:
            raise ValueError(f"{path}: no label columns besides {image_column!r}")
        labels = _label_matrix(frame, label_columns, path)
        rows = np.arange(len(frame))
        if split != "all":
            if has_split:
                rows = rows[frame[split_column].astype(str).str.strip().to_numpy() == split]
            else:
                fractions = parse_fractions(split_fractions, "csv split_fractions")
                if split not in ("train", "val", "test"):
                    raise ValueError(
                        f"csv: unknown split {split!r}; expected train, val, test or all"
                    )
                parts = seeded_split([str(i) for i in rows], fractions, seed)
                rows = np.array(
                    sorted(int(i) for i in parts[("train", "val", "test").index(split)]), dtype=int
                )
        base = path.parent
        records = []
        for i in rows:
            name = frame[image_column].iloc[i]
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{path}, line {i + 2}, column {image_column!r}: empty image path")
            records.append(Record(name, base / name.strip(), labels[i]))
        if boxes is not None:
            box_file = Path(boxes) if Path(boxes).is_absolute() else base / boxes
            by_name = read_box_file(box_file, label_columns)
            for record in records:
                file_name = Path(record.image_id).name
                if record.image_id not in by_name and file_name in by_name:
                    by_name[record.image_id] = by_name.pop(file_name)
            attach_boxes(records, by_name, box_file)
        if in_channels is None:
            in_channels = 3 if kind == "voc" else 1
        super().__init__(
            records,
            label_columns,
            name=f"csv-{path.stem}",
            split=split,
            size=size,
            augment=augment,
            kind=kind,
            in_channels=in_channels,
            **options,
        )


def _label_matrix(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """(N, C) float labels; every value must be 0 or 1."""
    matrix = np.zeros((len(frame), len(columns)), dtype=np.float32)
    for j, column in enumerate(columns):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = ~values.isin([0.0, 1.0])
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"{path}, line {i + 2}, column {column!r}: expected a 0/1 label, "
                f"got {frame[column].iloc[i]!r}"
            )
        matrix[:, j] = values.to_numpy(dtype=np.float32)
    return matrix
