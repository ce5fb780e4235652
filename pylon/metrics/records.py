"""Per-pair records, the one currency of the benchmark metrics: each metric family scores every
(image, class) pair once into a :class:`PairRecords`, and every figure (per class, pooled over
pairs, mean over classes, by lesion size, bootstrap intervals) is a small reduction of records.

Records of several batches or DDP ranks combine exactly by concatenation (:meth:`PairRecords.cat`)
as long as ``image_index`` is global (the caller offsets each batch by the images before it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class PairRecords:
    """One value per scored (image, class) pair, CPU tensors of shape (P,).

    ``value`` is float64: 0/1 for hit metrics, a ratio for energy or IoU; NaN where the metric is
    undefined for that pair (e.g. an all-zero map), which every reduction leaves out and counts.
    ``box_area`` is the number of pixels of the union of the pair's boxes and ``image_area`` the
    pixels of the image they are measured in, so size buckets can be formed afterwards.
    """

    image_index: Tensor  # long
    class_index: Tensor  # long
    value: Tensor  # float64, NaN = undefined
    box_area: Tensor  # long
    image_area: Tensor  # long

    def __post_init__(self) -> None:
        n = len(self.image_index)
        for f in fields(self):
            if len(getattr(self, f.name)) != n:
                raise ValueError(
                    f"PairRecords.{f.name} has {len(getattr(self, f.name))} rows, not {n}"
                )

    def __len__(self) -> int:
        return len(self.image_index)

    @classmethod
    def cat(cls, parts: Sequence[PairRecords]) -> PairRecords:
        """The records of several batches (or ranks) as one, in the order given."""
        if not parts:
            return cls.empty()
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    @classmethod
    def empty(cls) -> PairRecords:
        """No pairs."""
        long = torch.zeros(0, dtype=torch.long)
        return cls(long, long, torch.zeros(0, dtype=torch.float64), long, long)

    def select(self, keep: Tensor) -> PairRecords:
        """The pairs where the boolean mask ``keep`` (P,) is true."""
        return PairRecords(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})

    @property
    def box_share(self) -> Tensor:
        """Box area as a share of the image, (P,) float64."""
        return self.box_area.double() / self.image_area.double().clamp(min=1)


def reduce_records(records: PairRecords, num_classes: int) -> dict[str, object]:
    """Per-class means, the mean over pairs and the mean over classes of defined values.

    Args:
        records: the scored pairs.
        num_classes: classes of the maps (classes without pairs get NaN and ``n`` 0).

    Returns:
        ``{"per_class": (C,) float64, "n_per_class": (C,) long, "pooled": float, "macro":
        float, "n": int, "undefined": int}``: ``pooled`` weighs every defined pair equally,
        ``macro`` averages the classes that have defined pairs; ``undefined`` counts NaN values.
    """
    defined = ~torch.isnan(records.value)
    cls = records.class_index[defined]
    values = records.value[defined]
    sums = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, cls, values)
    counts = torch.bincount(cls, minlength=num_classes)
    per_class = torch.where(counts > 0, sums / counts.clamp(min=1), math.nan)
    present = counts > 0
    n = int(counts.sum())
    return {
        "per_class": per_class,
        "n_per_class": counts,
        "pooled": float(values.sum() / n) if n else math.nan,
        "macro": float(per_class[present].mean()) if bool(present.any()) else math.nan,
        "n": n,
        "undefined": int((~defined).sum()),
    }
