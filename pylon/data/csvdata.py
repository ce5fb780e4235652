"""Bring-your-own data: a CSV of image paths and 0/1 label columns, optional NIH-format box file."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pylon.data.base import BoxDataset, Record, parse_fractions, seeded_split
from pylon.data.tables import (
    attach_boxes,
    check_box_images,
    check_ids,
    label_matrix,
    read_box_file,
    read_csv_checked,
)
from pylon.data.transforms import TransformKind

SPLIT_VALUES = ("train", "val", "test")


class CSVDataset(BoxDataset):
    """Images listed in a CSV: ``image_column`` holds paths (relative to the CSV's folder unless
    absolute), every other column except ``split_column`` is a 0/1 label (or give
    ``label_columns``). The class names are the label column names.

    ``root`` is the CSV file or the folder containing ``csv`` (default ``labels.csv``). With a
    ``split`` column (values ``train``, ``val`` or ``test``; anything else is an error naming the
    row), the dataset keeps the rows whose value equals ``split``; without one,
    splits ``train/val/test`` are drawn with ``split_fractions`` (default "80/10/10") and
    ``seed``. ``split="all"`` keeps every row. ``boxes`` names a box CSV in the NIH format
    (``Image Index,Finding Label,Bbox [x,y,w,h]``) whose ``Image Index`` is the value in
    ``image_column`` (or its file name) and whose labels are class names. Image values must be
    unique, and every box must belong to a listed image.
    """

    splits: tuple[str, ...] = (*SPLIT_VALUES, "all")  # the split names it reads

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
        labels = label_matrix(frame, label_columns, path)
        names = check_ids(frame[image_column].tolist(), path, image_column)
        if split != "all" and split not in SPLIT_VALUES:
            raise ValueError(
                f"csv: unknown split {split!r}; expected {', '.join(SPLIT_VALUES)} or all"
            )
        rows = np.arange(len(frame))
        if split != "all" and has_split:
            values = _split_values(frame[split_column], path, split_column)
            rows = rows[values == split]
        elif split != "all":
            fractions = parse_fractions(split_fractions, "csv split_fractions")
            parts = seeded_split([str(i) for i in rows], fractions, seed)
            rows = np.array(sorted(int(i) for i in parts[SPLIT_VALUES.index(split)]), dtype=int)
        base = path.parent
        records = [Record(names[i], base / names[i], labels[i]) for i in rows]
        if boxes is not None:
            box_file = Path(boxes) if Path(boxes).is_absolute() else base / boxes
            by_name = read_box_file(box_file, label_columns)
            _match_file_names(by_name, names, box_file)
            check_box_images(by_name, set(names), box_file, f"{path} (column {image_column!r})")
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


def _match_file_names(by_name: dict, names: list[str], box_file: Path) -> None:
    """Re-key boxes given by file name (``0001.png``) to the image column's value."""
    known = set(names)
    by_file_name: dict[str, list[str]] = {}
    for name in names:
        by_file_name.setdefault(Path(name).name, []).append(name)
    for name in [n for n in by_name if n not in known and n in by_file_name]:
        matches = by_file_name[name]
        if len(matches) > 1:
            raise ValueError(
                f"{box_file}, line {by_name[name][0][0]}: image {name!r} is ambiguous; it is "
                f"the file name of {', '.join(map(repr, matches[:3]))}: give the full value"
            )
        by_name[matches[0]] = by_name.pop(name)


def _split_values(column: pd.Series, path: Path, name: str) -> np.ndarray:
    """The split column's values, stripped; each must be one of train, val, test."""
    values = column.fillna("").astype(str).str.strip().to_numpy()
    for i, value in enumerate(values):
        if value not in SPLIT_VALUES:
            raise ValueError(
                f"{path}, line {i + 2}, column {name!r}: unknown split {column.iloc[i]!r}; "
                f"expected one of {', '.join(SPLIT_VALUES)}"
            )
    return values
