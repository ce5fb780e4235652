"""Shared dataset over a table of image files, multi-hot labels and boxes (NIH, VinDr, VOC, CSV)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pylon.data import workers as _workers  # noqa: F401  (the OpenCV fork guard)
from pylon.data.cache import ImageCache, stat_sources
from pylon.data.images import DATASET_PNG16, read_image
from pylon.data.preprocessing import Preprocessing, make_preprocessing
from pylon.data.sample import Sample
from pylon.data.transforms import (
    INTERPOLATION,
    TransformKind,
    apply_transform,
    build_transform,
    normalization,
)

# Boxes may overhang their image by this many pixels (annotation rounding); more is an error.
BOX_TOLERANCE = 1.0


@dataclass
class Record:
    """One image: file, multi-hot labels, boxes ``(x, y, w, h, class)`` in the file's pixels."""

    image_id: str
    path: Path
    labels: np.ndarray
    boxes: list[tuple[float, float, float, float, int]] = field(default_factory=list)


def child_paths(folder: Path, names: Sequence[str]) -> list[Path]:
    """``[folder / name for name in names]``, about 3x faster for plain file names.

    ``folder / name`` re-parses every name; for names without a separator that are not ``.`` or
    ``..`` the result is ``folder``'s parts plus the name, which pathlib's own child constructor
    (used by ``Path.iterdir``; Python 3.10-3.13) builds without parsing. Other names, or a
    Python without that constructor, take ``/``. The paths are equal either way.
    """
    make = getattr(folder, "_make_child_relpath", None)
    joined = "\0".join(names)
    plain = os.sep not in joined and (os.altsep is None or os.altsep not in joined)
    if make is None or not plain or not {"", ".", ".."}.isdisjoint(names):
        return [folder / name for name in names]
    return [make(name) for name in names]


def check_box(
    box: Sequence[float], height: int, width: int, where: str
) -> tuple[float, float, float, float]:
    """Check an ``(x, y, w, h)`` box against a ``height`` x ``width`` image; clip overhang."""
    x, y, w, h = (float(v) for v in box[:4])
    if not all(np.isfinite((x, y, w, h))) or w <= 0 or h <= 0:
        raise ValueError(
            f"{where}: box (x={x}, y={y}, w={w}, h={h}) must have finite x, y and w, h > 0"
        )
    tol = BOX_TOLERANCE
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        raise ValueError(
            f"{where}: box (x={x}, y={y}, w={w}, h={h}) lies outside the {width}x{height} image"
        )
    x0, y0 = max(x, 0.0), max(y, 0.0)
    x1, y1 = min(x + w, float(width)), min(y + h, float(height))
    return x0, y0, x1 - x0, y1 - y0


def seeded_split(ids: Sequence[str], fractions: Sequence[float], seed: int) -> list[list[str]]:
    """Partition sorted ``ids`` into ``len(fractions)`` reproducible random parts."""
    fractions = np.asarray(fractions, dtype=float)
    if fractions.ndim != 1 or (fractions < 0).any() or fractions.sum() <= 0:
        raise ValueError(f"split fractions must be non-negative and not all zero, got {fractions}")
    order = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(order))
    bounds = np.round(np.cumsum(fractions / fractions.sum()) * len(order)).astype(int)
    parts, start = [], 0
    for stop in bounds:
        parts.append([order[i] for i in perm[start:stop]])
        start = stop
    return parts


def parse_fractions(spec: str | Sequence[float], where: str) -> list[float]:
    """``"70/10/20"`` or ``(0.7, 0.1, 0.2)`` -> three fractions (train, val, test)."""
    try:
        values = [float(v) for v in (spec.split("/") if isinstance(spec, str) else spec)]
    except ValueError as err:
        raise ValueError(
            f"{where}: expected 'train/val/test' like '70/10/20', got {spec!r}"
        ) from err
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise ValueError(
            f"{where}: expected three non-negative parts like '70/10/20', got {spec!r}"
        )
    return values


def _missing_files_error(
    records: Sequence[Record],
    missing: Sequence[int],
    name: str,
    split: str,
    listed_in: tuple[Path, Sequence[int]] | None,
) -> FileNotFoundError:
    """The error for the records at ``missing`` whose files are not there; with ``listed_in``
    (a split file and each record's line in it) it names the first one's line."""
    first = records[missing[0]]
    if listed_in is not None:
        path, lines = listed_in
        more = f" ({len(missing)} image files missing)" if len(missing) > 1 else ""
        return FileNotFoundError(
            f"{path}, line {lines[missing[0]]}: image {first.image_id!r} not found at "
            f"{first.path}{more}"
        )
    return FileNotFoundError(
        f"{name}: {len(missing)} image file(s) of split {split!r} not found, "
        f"first: {', '.join(str(records[i].path) for i in missing[:3])}"
    )


class BoxDataset(Dataset):
    """Images on disk with labels and boxes, decoded (or read from the cache) and augmented.

    Subclasses build the ``records`` for their split from their official files. With
    ``labels_from_boxes`` a sample's labels are the classes of the boxes that survive its
    transform (VOC, as the reference: an object cropped away loses its label); otherwise
    they are the record's labels. Every file is stat-ed once, for the existence check and the
    cache key together; ``listed_in`` (the split file the records come from and each record's
    line in it) makes a missing file's error name that line. ``cache_size`` is the side of a
    training (``augment``) cache, which keeps each image's aspect ratio; evaluation caches hold
    the eval resize at ``size`` (:mod:`pylon.data.cache`).
    """

    # The keywords of this constructor that a subclass passes on from its own ``**options``
    # (the others it sets itself): with the subclass's keywords, the options a config may give.
    forwarded_options: tuple[str, ...] = (
        "cache",
        "cache_dir",
        "cache_size",
        "cache_workers",
        "progress",
    )

    def __init__(
        self,
        records: list[Record],
        class_names: Sequence[str],
        *,
        name: str,
        split: str,
        size: int,
        augment: bool,
        kind: TransformKind,
        in_channels: int,
        cache: bool = True,
        cache_dir: str | os.PathLike | None = None,
        cache_size: int | None = None,
        cache_workers: int | None = None,
        progress: bool = True,
        labels_from_boxes: bool = False,
        listed_in: tuple[Path, Sequence[int]] | None = None,
    ):
        if not records:
            raise ValueError(f"{name}: split {split!r} contains no images")
        # One stat per file: the existence check and the cache key together.
        digest, missing = stat_sources([r.path for r in records])
        if missing:
            raise _missing_files_error(records, missing, name, split, listed_in)
        self.records = records
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.name, self.split, self.size = name, split, size
        self.augment, self.kind, self.in_channels = augment, kind, in_channels
        self.labels_from_boxes = labels_from_boxes
        self.mean, self.std = normalization(kind, in_channels)
        self.transform = build_transform(kind, size, augment, in_channels=in_channels)
        self.cache: ImageCache | None = None
        if cache:
            # Evaluation caches hold the eval transform's own resize (pixels identical to
            # decoding); training caches keep each image's shape for augmentation to act on.
            self.cache = ImageCache.open_or_build(
                name,
                [r.image_id for r in records],
                [r.path for r in records],
                size=(cache_size or size) if augment else size,
                layout="fit" if augment else "square",
                channels=in_channels,
                interpolation=INTERPOLATION[kind],
                cache_dir=cache_dir,
                workers=cache_workers,
                progress=progress,
                split=split,
                digest=digest,
            )

    @property
    def preprocessing(self) -> Preprocessing:
        """How a model trained on this dataset expects its inputs (its evaluation transform)."""
        return make_preprocessing(
            self.kind, self.size, self.in_channels, self.mean, self.std, self.class_names
        )

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> tuple[np.ndarray, list[tuple[float, float, float, float, int]]]:
        """The untransformed uint8 image (cached or decoded) and its boxes in its pixels."""
        record = self.records[index]
        if self.cache is None:
            return read_image(record.path, self.in_channels, png16=DATASET_PNG16), list(
                record.boxes
            )
        image = self.cache[index]
        height, width = self.cache.original_sizes[index]
        sy, sx = image.shape[0] / height, image.shape[1] / width
        boxes = [(x * sx, y * sy, w * sx, h * sy, c) for x, y, w, h, c in record.boxes]
        return image, boxes

    def __getitem__(self, index: int) -> Sample:
        record = self.records[index]
        image, boxes = self.load(index)
        tensor, out_boxes = apply_transform(self.transform, image, boxes)
        if self.labels_from_boxes:
            labels = torch.zeros(self.num_classes, dtype=torch.float32)
            labels[[box[4] for box in out_boxes]] = 1.0
        else:
            labels = torch.as_tensor(record.labels, dtype=torch.float32)
        return {
            "image": tensor,
            "labels": labels,
            "boxes": out_boxes,
            "image_id": record.image_id,
        }
