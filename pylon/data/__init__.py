"""Datasets in their official on-disk layouts, the synthetic default, transforms and the cache."""

from pylon.data.registry import create_dataset, get_dataset_class, list_datasets
from pylon.data.sample import Box, Sample, collate

__all__ = ["Box", "Sample", "collate", "create_dataset", "get_dataset_class", "list_datasets"]
