"""Dataset registry: ``create_dataset(name, ...)`` and ``list_datasets()``.

Entries are import strings so that a dataset's module is only imported when it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_DATASETS: dict[str, str] = {
    "synthetic": "pylon.data.synthetic:SyntheticDataset",
    "nih14": "pylon.data.nih:NIH14Dataset",
    "vindr": "pylon.data.vindr:VinDrDataset",
    "voc": "pylon.data.voc:VOCDataset",
    "csv": "pylon.data.csvdata:CSVDataset",
}


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def get_dataset_class(name: str) -> type:
    if name not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(list_datasets())}")
    module_name, class_name = _DATASETS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def create_dataset(
    name: str,
    root: str | None = None,
    split: str = "train",
    *,
    size: int = 256,
    augment: bool | None = None,
    **options: Any,
):
    """Build dataset ``name`` reading its official files under ``root``.

    ``augment`` defaults to on for the ``train`` split and off otherwise.
    """
    if augment is None:
        augment = split == "train"
    cls = get_dataset_class(name)
    return cls(root=root, split=split, size=size, augment=augment, **options)
