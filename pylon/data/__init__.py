"""Datasets in their official on-disk layouts, the synthetic default, transforms and the cache."""

from pylon.data.registry import create_dataset, get_dataset_class, list_datasets
from pylon.data.sample import Box, Sample, collate

__all__ = [
    "Box",
    "Sample",
    "collate",
    "create_dataset",
    "get_dataset_class",
    "list_datasets",
    "read_picked",
]


def __getattr__(name: str):
    # Lazy: the table readers import the dataset base (albumentations, torch) only when used.
    if name == "read_picked":
        from pylon.data.tables import read_picked

        return read_picked
    raise AttributeError(f"module 'pylon.data' has no attribute {name!r}")
