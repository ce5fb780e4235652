"""Dataset registry: ``create_dataset(name, ...)`` and ``list_datasets()``.

Entries are import strings so that a dataset's module is only imported when it is used.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from pylon.options import check_options, keyword_parameters, takes_any_keyword

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


# what create_dataset passes itself: never an option
_CALL_ARGS = ("root", "split", "size", "augment")


def dataset_options(name: str) -> dict[str, inspect.Parameter]:
    """The options dataset ``name`` accepts.

    Args:
        name: a name of :func:`list_datasets`.

    Returns:
        ``{option: parameter}`` (default and type hint): the constructor's keywords beyond
        ``root, split, size, augment``, and those its base class takes through ``**options``
        (named by the class's ``forwarded_options``).
    """
    cls = get_dataset_class(name)
    params = keyword_parameters(cls.__init__, exclude=_CALL_ARGS)
    forwarded = getattr(cls, "forwarded_options", ())
    for base in cls.__mro__[1:]:
        if "__init__" in vars(base):
            inherited = keyword_parameters(base.__init__)
            params.update(
                {k: p for k, p in inherited.items() if k in forwarded and k not in params}
            )
    return params


def check_dataset_options(name: str, options: Any, *, where: str = "options") -> None:
    """Refuse an option dataset ``name`` does not take, or a value of the wrong type.

    Args:
        name: a name of :func:`list_datasets` (else ``ValueError`` listing them).
        options: ``{option: value}`` as :func:`create_dataset` would get them.
        where: how the message names the options, e.g. ``"data.options"``.

    Raises:
        ValueError: one line naming ``where.<option>``, the dataset and the accepted options.
    """
    cls = get_dataset_class(name)
    for key in _CALL_ARGS:
        if isinstance(options, dict) and key in options:
            instead = "data.train_split, val_split, test_split" if key == "split" else f"data.{key}"
            raise ValueError(f"{where}.{key}: not a dataset option; set {instead} instead")
    # a constructor taking any keyword without naming what it forwards cannot be checked by name
    open_ended = takes_any_keyword(cls.__init__) and not hasattr(cls, "forwarded_options")
    check_options(
        options,
        dataset_options(name),
        where=where,
        owner=f"dataset {name!r}",
        allow_unknown=open_ended,
    )


def dataset_splits(name: str) -> tuple[str, ...] | None:
    """The split names dataset ``name`` reads (its class's ``splits``), ``None`` if it does not
    say."""
    return getattr(get_dataset_class(name), "splits", None)


def check_dataset_split(name: str, split: str, *, where: str = "split") -> None:
    """Refuse a split that dataset ``name`` does not have (``ValueError`` naming ``where``)."""
    splits = dataset_splits(name)
    if splits is not None and split not in splits:
        raise ValueError(
            f"{where}: dataset {name!r} has no split {split!r}; expected one of {', '.join(splits)}"
        )


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
