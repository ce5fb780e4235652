"""NIH ChestX-ray14 from its official files: 14 labels, patient-wise val split, bbox split."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pylon.data.base import BoxDataset, Record, check_box, seeded_split
from pylon.data.images import image_size

NIH14_CLASSES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
)
NIH14_SPLITS = ("train", "val", "test", "bbox")
# The box file spells some findings differently from the label file.
BOX_LABEL_ALIASES = {"Infiltrate": "Infiltration"}
_ENTRY_FILES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")


def read_csv_checked(path: Path, required: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` with a clear error for a missing file, a parse error or missing columns."""
    if not path.is_file():
        raise FileNotFoundError(f"CSV file not found: {path}")
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


def read_box_file(
    path: Path, class_names: Sequence[str]
) -> dict[str, list[tuple[int, float, float, float, float, int]]]:
    """Parse a box file in the NIH format (``Image Index,Finding Label,Bbox [x,y,w,h],,,``).

    Returns ``{image name: [(line number, x, y, w, h, class index), ...]}``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"box file not found: {path}")
    index = {name: i for i, name in enumerate(class_names)}
    boxes: dict[str, list[tuple[int, float, float, float, float, int]]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None or [h.strip() for h in header[:2]] != ["Image Index", "Finding Label"]:
            raise ValueError(
                f"{path}: expected a header starting 'Image Index,Finding Label,Bbox [x,y,w,h]', "
                f"got {','.join(header or [])!r}"
            )
        for line, row in enumerate(rows, start=2):
            fields = [f.strip() for f in row]
            while fields and fields[-1] == "":
                fields.pop()  # the official file has trailing empty columns
            if not fields:
                continue
            if len(fields) != 6:
                raise ValueError(
                    f"{path}, line {line}: expected 6 fields (image, label, x, y, w, h), "
                    f"got {len(fields)}"
                )
            name, label = fields[0], BOX_LABEL_ALIASES.get(fields[1], fields[1])
            if label not in index:
                raise ValueError(
                    f"{path}, line {line}: unknown class {fields[1]!r}; "
                    f"expected one of {', '.join(class_names)}"
                )
            try:
                x, y, w, h = (float(v) for v in fields[2:6])
            except ValueError as err:
                raise ValueError(f"{path}, line {line}: box coordinates must be numbers") from err
            boxes.setdefault(name, []).append((line, x, y, w, h, index[label]))
    return boxes


def attach_boxes(
    records: list[Record],
    boxes: dict[str, list[tuple[int, float, float, float, float, int]]],
    box_file: Path,
) -> None:
    """Check each record's boxes against its image size (from the header) and attach them."""
    for record in records:
        entries = boxes.get(record.image_id)
        if not entries:
            continue
        height, width = image_size(record.path)
        for line, x, y, w, h, cls in entries:
            where = f"{box_file}, line {line} ({record.image_id})"
            record.boxes.append((*check_box((x, y, w, h), height, width, where), cls))


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"split list not found: {path}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


class NIH14Dataset(BoxDataset):
    """ChestX-ray14 under ``root``: ``images/``, ``Data_Entry_2017(_v2020).csv``,
    ``train_val_list.txt``, ``test_list.txt`` and ``BBox_List_2017.csv``.

    Splits: ``train`` and ``val`` (train_val divided by patient, ``val_fraction`` of the
    patients, reproducible from ``seed``), ``test`` and ``bbox`` (the images that have boxes).
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        size: int = 256,
        augment: bool = False,
        *,
        val_fraction: float = 0.1,
        seed: int = 0,
        in_channels: int = 1,
        **options: Any,
    ):
        if root is None:
            raise ValueError(
                "nih14: root must be the folder holding images/ and Data_Entry_2017.csv"
            )
        if split not in NIH14_SPLITS:
            raise ValueError(f"nih14: unknown split {split!r}; expected one of {NIH14_SPLITS}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"nih14: val_fraction must be in (0, 1), got {val_fraction}")
        root = Path(root)
        entries, entry_file = self._read_entries(root)
        box_file = root / "BBox_List_2017.csv"
        boxes = read_box_file(box_file, NIH14_CLASSES)
        names = self._split_names(root, split, entries, entry_file, boxes, val_fraction, seed)
        unknown = [n for n in boxes if n not in entries.index]
        if unknown:
            raise ValueError(f"{box_file}: image {unknown[0]!r} is not listed in {entry_file}")
        labels = _multi_hot(entries, entry_file)
        images = root / "images"
        records = [Record(n, images / n, labels[entries.index.get_loc(n)]) for n in names]
        attach_boxes(records, boxes, box_file)
        super().__init__(
            records,
            NIH14_CLASSES,
            name="nih14",
            split=split,
            size=size,
            augment=augment,
            kind="xray",
            in_channels=in_channels,
            **options,
        )
        self.patient_ids = [str(entries.at[n, "Patient ID"]) for n in names]

    @staticmethod
    def _read_entries(root: Path) -> tuple[pd.DataFrame, Path]:
        path = next((root / f for f in _ENTRY_FILES if (root / f).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"nih14: none of {', '.join(_ENTRY_FILES)} found in {root}")
        frame = read_csv_checked(
            path, ["Image Index", "Finding Labels", "Patient ID"], dtype={"Patient ID": str}
        )
        frame["Finding Labels"] = frame["Finding Labels"].fillna("")
        if frame["Image Index"].duplicated().any():
            dup = frame.loc[frame["Image Index"].duplicated(), "Image Index"].iloc[0]
            raise ValueError(f"{path}: image {dup!r} appears more than once")
        return frame.set_index("Image Index", drop=False), path

    @staticmethod
    def _split_names(
        root: Path,
        split: str,
        entries: pd.DataFrame,
        entry_file: Path,
        boxes: dict,
        val_fraction: float,
        seed: int,
    ) -> list[str]:
        if split == "bbox":
            return sorted(boxes)
        list_file = root / ("test_list.txt" if split == "test" else "train_val_list.txt")
        names = _read_list(list_file)
        for line, name in enumerate(names, start=1):
            if name not in entries.index:
                raise ValueError(f"{list_file}, line {line}: image {name!r} is not in {entry_file}")
        if split == "test":
            return names
        patients = entries.loc[names, "Patient ID"].astype(str)
        train_p, val_p = seeded_split(
            sorted(set(patients)), (1.0 - val_fraction, val_fraction), seed
        )
        keep = set(val_p if split == "val" else train_p)
        return [n for n, p in zip(names, patients, strict=True) if p in keep]


def _multi_hot(entries: pd.DataFrame, entry_file: Path) -> np.ndarray:
    """(N, 14) multi-hot labels from ``Finding Labels``, one lookup per distinct label string."""
    index = {name: i for i, name in enumerate(NIH14_CLASSES)}
    labels = np.zeros((len(entries), len(NIH14_CLASSES)), dtype=np.float32)
    codes, uniques = pd.factorize(entries["Finding Labels"])
    for code, text in enumerate(uniques):
        vector = np.zeros(len(NIH14_CLASSES), dtype=np.float32)
        for label in (t.strip() for t in str(text).split("|")):
            if label in ("No Finding", ""):
                continue
            if label not in index:
                row = int(np.flatnonzero(codes == code)[0]) + 2
                raise ValueError(
                    f"{entry_file}, line {row}, column 'Finding Labels': unknown class "
                    f"{label!r}; expected one of {', '.join(NIH14_CLASSES)} or 'No Finding'"
                )
            vector[index[label]] = 1.0
        labels[codes == code] = vector
    return labels
