"""NIH ChestX-ray14 from its official files: 14 labels, patient-wise val split, bbox split;
or the reference implementation's fixed split files (``split_files``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pylon.data.base import BoxDataset, Record, child_paths, seeded_split
from pylon.data.cache import gc_paused
from pylon.data.tables import (
    attach_boxes,
    check_box_images,
    check_ids,
    find_folder,
    read_box_file,
    read_csv_checked,
    read_label_table,
    read_list,
)

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
# The reference implementation's split files (``data/nih14/`` of cmb-chula/pylon), per split.
REFERENCE_SPLIT_FILES = {
    "train": "original_split_train.csv",
    "val": "original_split_val.csv",
    "test": "original_split_test.csv",
    "bbox": "bbox_only.csv",
}


class NIH14Dataset(BoxDataset):
    """ChestX-ray14 under ``root``: ``images/``, ``Data_Entry_2017(_v2020).csv``,
    ``train_val_list.txt``, ``test_list.txt`` and ``BBox_List_2017.csv``.

    Splits: ``train`` and ``val`` (train_val divided by patient, ``val_fraction`` of the
    patients, reproducible from ``seed``), ``test`` and ``bbox`` (the images that have boxes).
    With ``split_files`` (a folder, absolute or relative to ``root``), each split and its labels
    are read from the reference's files instead (:data:`REFERENCE_SPLIT_FILES`).
    """

    splits: tuple[str, ...] = NIH14_SPLITS  # the split names it reads

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        size: int = 256,
        augment: bool = False,
        *,
        val_fraction: float = 0.1,
        seed: int = 0,
        split_files: str | os.PathLike | None = None,
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
        with gc_paused():  # 78k records: the collector would rescan the heap many times
            entries, entry_file = self._read_entries(root)
            box_file = root / "BBox_List_2017.csv"
            boxes = read_box_file(box_file, NIH14_CLASSES, BOX_LABEL_ALIASES)
            check_box_images(boxes, entries.index, box_file, str(entry_file))
            images = root / "images"
            listed_in = None
            if split_files is not None:
                split_file = _split_file(root, split_files, split)
                records, lines = _records_from_split_file(split_file, entries, entry_file, images)
                listed_in = (split_file, lines)
            else:
                names = _split_names(root, split, entries, entry_file, boxes, val_fraction, seed)
                labels = _multi_hot(entries, entry_file)[entries.index.get_indexer(names)]
                paths = child_paths(images, names)
                records = [Record(*r) for r in zip(names, paths, labels, strict=True)]
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
            listed_in=listed_in,
            **options,
        )
        rows = entries.index.get_indexer([r.image_id for r in records])
        self.patient_ids = [str(p) for p in entries["Patient ID"].to_numpy()[rows]]

    @staticmethod
    def _read_entries(root: Path) -> tuple[pd.DataFrame, Path]:
        path = next((root / f for f in _ENTRY_FILES if (root / f).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"nih14: none of {', '.join(_ENTRY_FILES)} found in {root}")
        frame = read_csv_checked(
            path,
            ["Image Index", "Finding Labels", "Patient ID"],
            dtype={"Image Index": str, "Patient ID": str},
        )
        frame["Finding Labels"] = frame["Finding Labels"].fillna("")
        check_ids(frame["Image Index"].tolist(), path, "Image Index")
        return frame.set_index("Image Index", drop=False), path


def _split_names(
    root: Path,
    split: str,
    entries: pd.DataFrame,
    entry_file: Path,
    boxes: dict,
    val_fraction: float,
    seed: int,
) -> list[str]:
    """Image names of ``split`` from the official lists; train/val divided by patient."""
    if split == "bbox":
        return sorted(boxes)
    train_val_file, test_file = root / "train_val_list.txt", root / "test_list.txt"
    lists = {train_val_file: read_list(train_val_file), test_file: read_list(test_file)}
    rows = {}
    for list_file, names in lists.items():
        rows[list_file] = entries.index.get_indexer(names)
        unknown = np.flatnonzero(rows[list_file] < 0)
        if len(unknown):
            line, name = int(unknown[0]) + 1, names[unknown[0]]
            raise ValueError(f"{list_file}, line {line}: image {name!r} is not in {entry_file}")
    leaked = sorted(set(lists[train_val_file]) & set(lists[test_file]))
    if leaked:
        raise ValueError(
            f"nih14: image {leaked[0]!r} is listed in both {train_val_file} and {test_file} "
            f"({len(leaked)} image(s) in both); a test image must not be trained on"
        )
    if split == "test":
        return lists[test_file]
    names = lists[train_val_file]
    patients = [str(p) for p in entries["Patient ID"].to_numpy()[rows[train_val_file]]]
    train_p, val_p = seeded_split(sorted(set(patients)), (1.0 - val_fraction, val_fraction), seed)
    keep = set(val_p if split == "val" else train_p)
    return [n for n, p in zip(names, patients, strict=True) if p in keep]


def _split_file(root: Path, split_files: str | os.PathLike, split: str) -> Path:
    path = find_folder(root, split_files, "nih14: split_files") / REFERENCE_SPLIT_FILES[split]
    if not path.is_file():
        # the reference repository keeps its test split one folder up, in data/
        where = (
            "; the reference repository keeps it in data/, not data/nih14/: copy it next to the "
            "other split files"
            if split == "test"
            else ""
        )
        raise FileNotFoundError(f"nih14: split file for {split!r} not found: {path}{where}")
    return path


def _records_from_split_file(
    path: Path, entries: pd.DataFrame, entry_file: Path, images: Path
) -> tuple[list[Record], list[int]]:
    """Records of a reference split file and their lines in it; labels are the file's columns,
    as the reference's. (That the images exist is checked with the dataset's one stat pass.)"""
    table = read_label_table(path, NIH14_CLASSES)
    unknown = np.flatnonzero(entries.index.get_indexer(table.ids) < 0)
    if len(unknown):
        line, image_id = table.lines[unknown[0]], table.ids[unknown[0]]
        raise ValueError(f"{path}, line {line}: image {image_id!r} is not in {entry_file}")
    paths = child_paths(images, table.ids)
    records = [Record(*r) for r in zip(table.ids, paths, table.labels, strict=True)]
    return records, table.lines


def _multi_hot(entries: pd.DataFrame, entry_file: Path) -> np.ndarray:
    """(N, 14) multi-hot labels from ``Finding Labels``, one lookup per distinct label string."""
    index = {name: i for i, name in enumerate(NIH14_CLASSES)}
    codes, uniques = pd.factorize(entries["Finding Labels"])
    vectors = np.zeros((len(uniques), len(NIH14_CLASSES)), dtype=np.float32)
    for code, text in enumerate(uniques):
        for label in (t.strip() for t in str(text).split("|")):
            if label in ("No Finding", ""):
                continue
            if label not in index:
                row = int(np.flatnonzero(codes == code)[0]) + 2
                raise ValueError(
                    f"{entry_file}, line {row}, column 'Finding Labels': unknown class "
                    f"{label!r}; expected one of {', '.join(NIH14_CLASSES)} or 'No Finding'"
                )
            vectors[code, index[label]] = 1.0
    return vectors[codes]
