"""Checked readers for the tables every dataset uses: CSVs, id lists, label tables, box files.

Errors name the file, the line and the column; no dataset reaches into another one's module.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pylon.data.base import Record, check_box
from pylon.data.images import image_size

# One parsed box row: (line number, x, y, w, h, class index).
BoxRow = tuple[int, float, float, float, float, int]
# Columns that name the image in the reference implementation's label tables (NIH, VinDr).
ID_COLUMNS = ("Image Index", "image_id")


def read_csv_checked(path: Path, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` with a clear error for a missing file, a parse error or missing columns.

    A UTF-8 byte-order mark is dropped and column names are stripped of spaces.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
    kwargs.setdefault("encoding", "utf-8-sig")
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot parse CSV file {path}: {err}") from err
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing required column(s) {missing}; found columns {list(frame.columns)}"
        )
    return frame


def check_ids(values: Sequence[Any], path: Path, column: str, first_line: int = 2) -> list[str]:
    """The values of an id ``column`` as strings: each non-empty, without surrounding spaces,
    and unique. ``first_line`` is the file line of ``values[0]``."""
    values = list(values)
    if all(isinstance(v, str) for v in values):
        stripped = [v.strip() for v in values]
        if all(stripped) and stripped == values and len(set(values)) == len(values):
            return values  # all good: the line-by-line pass below only finds the first error
    ids: list[str] = []
    seen: dict[str, int] = {}
    for line, value in enumerate(values, start=first_line):
        if not isinstance(value, str) or not value or value != value.strip():
            where = f"{path}, line {line}, column {column!r}"
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{where}: empty image name")
            raise ValueError(f"{where}: image name {value!r} has leading or trailing spaces")
        if value in seen:
            where = f"{path}, line {line}, column {column!r}"
            raise ValueError(f"{where}: image {value!r} is already listed on line {seen[value]}")
        seen[value] = line
        ids.append(value)
    return ids


def find_folder(root: Path, folder: str | os.PathLike, what: str) -> Path:
    """``folder`` as given (absolute, or relative to the working directory), else below ``root``;
    ``what`` names the option in the error when neither exists."""
    path = Path(folder)
    if not path.is_absolute() and not path.is_dir():
        path = Path(root) / path
    if not path.is_dir():
        raise FileNotFoundError(
            f"{what} folder {folder} not found (relative paths are tried from the working "
            f"directory and from {root})"
        )
    return path


def read_list(path: Path) -> list[str]:
    """Names listed one per line (blank lines skipped, spaces and a byte-order mark stripped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    return [s for s in (line.strip() for line in path.read_text("utf-8-sig").splitlines()) if s]


def label_matrix(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> np.ndarray:
    """(N, C) float32 labels from ``columns``; every value must be 0 or 1."""
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


@dataclass
class LabelTable:
    """A table of images and 0/1 class columns (the reference's split and picked files)."""

    path: Path
    id_column: str
    ids: list[str]
    class_names: list[str]
    labels: np.ndarray  # (N, C) float32
    lines: list[int]  # file line of each row

    def line_of(self, image_id: str) -> int:
        return self.lines[self.ids.index(image_id)]


def read_label_table(path: Path, class_names: Sequence[str] | None = None) -> LabelTable:
    """Read ``<id column>,<class columns>`` as the reference writes its split and picked files.

    The id column is ``Image Index`` (NIH) or ``image_id`` (VinDr); an unnamed leading index
    column (``bbox_only.csv``, ``picked.csv``) is ignored. With ``class_names`` those columns
    are required and read in that order; without, every other column is a class.
    """
    path = Path(path)
    frame = read_csv_checked(path, [], dtype=str, keep_default_na=False)
    if len(frame.columns) and (frame.columns[0] == "" or frame.columns[0].startswith("Unnamed:")):
        frame = frame.iloc[:, 1:]
    id_column = next((c for c in ID_COLUMNS if c in frame.columns), None)
    if id_column is None:
        raise ValueError(
            f"{path}: expected an image column named {' or '.join(map(repr, ID_COLUMNS))}; "
            f"found columns {list(frame.columns)}"
        )
    if class_names is None:
        class_names = [c for c in frame.columns if c != id_column]
    missing = [c for c in class_names if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing class column(s) {missing}; found columns {list(frame.columns)}"
        )
    ids = check_ids(frame[id_column].tolist(), path, id_column)
    labels = label_matrix(frame, list(class_names), path)
    return LabelTable(path, id_column, ids, list(class_names), labels, list(range(2, len(ids) + 2)))


def read_picked(path: str | os.PathLike) -> list[str]:
    """Image ids of a reference "picked" file (``picked.csv``, ``v1_picked.csv``, ...), in order.

    Args:
        path: a CSV with an ``Image Index`` or ``image_id`` column (class columns are allowed and
            read by :func:`read_label_table`).
    Returns:
        The listed image ids.
    """
    table = read_label_table(Path(path))
    if not table.ids:
        raise ValueError(f"{path}: no images listed")
    return table.ids


def read_box_file(
    path: Path, class_names: Sequence[str], aliases: Mapping[str, str] | None = None
) -> dict[str, list[BoxRow]]:
    """Parse a box file in the NIH format (``Image Index,Finding Label,Bbox [x,y,w,h],,,``).

    ``aliases`` maps spellings of the box file to ``class_names`` (NIH's ``Infiltrate``).
    A row repeated exactly (same image, class and box) is kept once, with a warning.
    Returns ``{image name: [(line number, x, y, w, h, class index), ...]}``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"box file not found: {path}")
    aliases = aliases or {}
    index = {name: i for i, name in enumerate(class_names)}
    boxes: dict[str, list[BoxRow]] = {}
    seen: dict[tuple, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:2]] != ["Image Index", "Finding Label"]:
            raise ValueError(
                f"{path}: expected a header starting 'Image Index,Finding Label,Bbox [x,y,w,h]', "
                f"got {','.join(header or [])!r}"
            )
        for line, row in enumerate(rows, start=2):
            fields = list(row)
            while fields and fields[-1].strip() == "":
                fields.pop()  # the official file has trailing empty columns
            if not fields:
                continue
            if len(fields) != 6:
                raise ValueError(
                    f"{path}, line {line}: expected 6 fields (image, label, x, y, w, h), "
                    f"got {len(fields)}"
                )
            name = check_ids([fields[0]], path, "Image Index", first_line=line)[0]
            label = aliases.get(fields[1].strip(), fields[1].strip())
            if label not in index:
                raise ValueError(
                    f"{path}, line {line}: unknown class {fields[1]!r}; "
                    f"expected one of {', '.join(class_names)}"
                )
            try:
                x, y, w, h = (float(v) for v in fields[2:6])
            except ValueError as err:
                raise ValueError(f"{path}, line {line}: box coordinates must be numbers") from err
            key = (name, index[label], x, y, w, h)
            if key in seen:
                warnings.warn(
                    f"{path}, line {line}: duplicate of the box on line {seen[key]} "
                    f"({name}, {label}); kept once",
                    stacklevel=2,
                )
                continue
            seen[key] = line
            boxes.setdefault(name, []).append((line, x, y, w, h, index[label]))
    return boxes


def check_box_images(boxes: Mapping[str, list[BoxRow]], known, box_file: Path, where: str) -> None:
    """Raise naming the box file's line when a box belongs to an image not in ``known``."""
    for name, entries in boxes.items():
        if name not in known:
            raise ValueError(
                f"{box_file}, line {entries[0][0]}: image {name!r} is not listed in {where}"
            )


def attach_boxes(records: list[Record], boxes: Mapping[str, list[BoxRow]], box_file: Path) -> None:
    """Check each record's boxes against its image size (from the header) and attach them."""
    for record in records:
        entries = boxes.get(record.image_id)
        if not entries:
            continue
        height, width = image_size(record.path)
        for line, x, y, w, h, cls in entries:
            where = f"{box_file}, line {line} ({record.image_id})"
            record.boxes.append((*check_box((x, y, w, h), height, width, where), cls))
