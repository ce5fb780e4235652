"""Point localization and IoBB / IoU accuracy of class activation maps against ground-truth boxes.

Stats, then reduce: ``score_pairs`` (``pylon.metrics.pairs``) computes each (image, class) pair's
peak, point hit and pixel counts; ``LocalizationAccumulator`` adds them up as integer counts per
class (exact across batches and DDP ranks); the accuracies are small functions of those counts.
Point: a hit if the peak of the up-sampled ``sigmoid(cam)`` lies in any box of the class. IoBB /
IoU at ``t``: a hit if ``|mask & gt| / |mask|`` (IoBB) or ``|mask & gt| / |mask | gt|`` (IoU)
exceeds ``t``, the mask being the map divided by its peak ``> 0.5``, the ground truth the union of
the class's boxes.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from pylon.metrics.pairs import PairScores, as_cams, score_pairs
from pylon.metrics.peaks import as_image_size

DEFAULT_THRESHOLDS = (0.1, 0.25, 0.5)


def _threshold_key(t: float) -> str:
    return f"{t:g}"


class LocalizationAccumulator:
    """Streaming point / IoBB / IoU accuracy: ``update`` per batch, then ``compute``.

    The state is integer counts per class (``counts()``), so accumulators from several processes
    combine exactly by summing them (``merge`` or ``from_counts``).
    """

    def __init__(
        self,
        num_classes: int,
        image_size: tuple[int, int],
        *,
        class_names: Sequence[str] | None = None,
        apply_sigmoid: bool = True,
        thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
        chunk_bytes: int | None = None,
    ):
        """An empty accumulator.

        Args:
            num_classes: classes of the maps.
            image_size: (H, W) of the network input (the boxes' pixels).
            class_names: names for the per-class keys (default: the class indices).
            apply_sigmoid: the maps are raw scores (True) or probabilities in [0, 1] (False).
            thresholds: IoBB / IoU thresholds, each in [0, 1).
            chunk_bytes: memory for one chunk of up-sampled maps (see ``score_pairs``).
        """
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"got {len(class_names)} class_names for {num_classes} classes")
        if any(not 0 <= t < 1 for t in thresholds):
            raise ValueError(f"thresholds must lie in [0, 1), got {tuple(thresholds)}")
        self.num_classes = num_classes
        self.image_size = as_image_size(image_size)
        self.class_names = list(class_names) if class_names is not None else None
        self.apply_sigmoid = apply_sigmoid
        self.thresholds = tuple(float(t) for t in thresholds)
        self.chunk_bytes = chunk_bytes
        num_t = len(self.thresholds)
        self.pairs = torch.zeros(num_classes, dtype=torch.long)
        self.point_hits = torch.zeros(num_classes, dtype=torch.long)
        self.iobb_hits = torch.zeros(num_t, num_classes, dtype=torch.long)
        self.iou_hits = torch.zeros(num_t, num_classes, dtype=torch.long)

    def update(self, cams, boxes: Sequence[Sequence]) -> PairScores:
        """Add one batch.

        Args:
            cams: class maps (N, C, h, w) of the batch (see ``score_pairs``).
            boxes: N lists of ``(x, y, w, h, class_index)`` in input pixels.

        Returns:
            The batch's ``PairScores`` (e.g. to pick heatmaps to draw).

        Raises:
            ValueError: for bad maps or boxes; with ``apply_sigmoid=False``, for maps with
                values outside [0, 1] (raw scores passed as probabilities), naming the range.
        """
        cams = as_cams(cams, self.num_classes)
        if not self.apply_sigmoid:
            check_probabilities(cams)
        scores = score_pairs(
            cams,
            boxes,
            self.image_size,
            apply_sigmoid=self.apply_sigmoid,
            chunk_bytes=self.chunk_bytes,
        )
        self.add(scores)
        return scores

    def add(self, scores: PairScores) -> None:
        """Add the per-pair statistics ``scores`` (from ``score_pairs``) to the counts."""
        cls = scores.class_index
        self.pairs.index_add_(0, cls, torch.ones_like(cls))
        self.point_hits.index_add_(0, cls, scores.point_hit.long())
        iobb, iou = scores.iobb, scores.iou
        for k, t in enumerate(self.thresholds):
            self.iobb_hits[k].index_add_(0, cls, (iobb > t).long())
            self.iou_hits[k].index_add_(0, cls, (iou > t).long())

    def counts(self) -> dict[str, Tensor]:
        """The integer state (``pairs``, ``point_hits`` (C,), ``iobb_hits``, ``iou_hits`` (T, C)):
        sum these across processes to combine accumulators."""
        return {
            "pairs": self.pairs,
            "point_hits": self.point_hits,
            "iobb_hits": self.iobb_hits,
            "iou_hits": self.iou_hits,
        }

    def load_counts(self, counts: dict[str, Tensor]) -> LocalizationAccumulator:
        """Replace the state with ``counts`` (e.g. summed over DDP ranks); returns ``self``."""
        for name, current in self.counts().items():
            value = torch.as_tensor(counts[name], dtype=torch.long).cpu()
            if value.shape != current.shape:
                raise ValueError(
                    f"counts[{name!r}] has shape {tuple(value.shape)}, "
                    f"expected {tuple(current.shape)}"
                )
            setattr(self, name, value.clone())
        return self

    @classmethod
    def from_counts(cls, counts: dict[str, Tensor], **kwargs) -> LocalizationAccumulator:
        """Build an accumulator holding ``counts``; ``kwargs`` as for the constructor."""
        num_classes = len(counts["pairs"])
        return cls(num_classes, **kwargs).load_counts(counts)

    def merge(self, other: LocalizationAccumulator) -> LocalizationAccumulator:
        """Add ``other``'s counts into this accumulator; returns ``self``."""
        if (other.num_classes, other.image_size, other.thresholds) != (
            self.num_classes,
            self.image_size,
            self.thresholds,
        ):
            raise ValueError("cannot merge accumulators with different classes, size or thresholds")
        summed = {k: v + other.counts()[k] for k, v in self.counts().items()}
        return self.load_counts(summed)

    def _name(self, c: int) -> str:
        return self.class_names[c] if self.class_names is not None else str(c)

    def compute(self) -> dict[str, float]:
        """The accuracies of the counts so far.

        Returns:
            ``point_acc_*``, then ``iobb<t>_*`` and ``iou<t>_*`` for each threshold, each with
            ``_weighted`` (pairs pooled), ``_macro`` (mean over classes that have pairs) and
            ``_<class>``; classes without pairs are omitted; NaN (with a warning) without pairs.
        """
        if int(self.pairs.sum()) == 0:
            warnings.warn("no ground-truth boxes seen: localization accuracy is NaN", stacklevel=2)
        names = [self._name(c) for c in range(self.num_classes)]
        out = accuracies("point_acc", self.point_hits, self.pairs, names)
        for k, t in enumerate(self.thresholds):
            out.update(accuracies(f"iobb{_threshold_key(t)}", self.iobb_hits[k], self.pairs, names))
        for k, t in enumerate(self.thresholds):
            out.update(accuracies(f"iou{_threshold_key(t)}", self.iou_hits[k], self.pairs, names))
        return out


def check_probabilities(cams: Tensor) -> None:
    """Refuse maps that are not probabilities: finite values below 0 or above 1.

    Args:
        cams: maps (N, C, h, w) meant to hold probabilities.

    Raises:
        ValueError: naming the range found and pointing to ``apply_sigmoid=True``.
    """
    finite = torch.isfinite(cams)
    if not bool(finite.any()):
        return
    # NaN and infinity are refused per pair by score_pairs, with the pair named
    low = float(torch.where(finite, cams, math.inf).min())
    high = float(torch.where(finite, cams, -math.inf).max())
    if low < 0 or high > 1:
        raise ValueError(
            f"apply_sigmoid=False expects probabilities in [0, 1], but the maps range from "
            f"{low:.4g} to {high:.4g}; pass apply_sigmoid=True for raw scores (logits)"
        )


def accuracies(prefix: str, hits: Tensor, pairs: Tensor, names: Sequence[str]) -> dict[str, float]:
    """Hit rates from counts per class.

    Args:
        prefix: the key prefix, e.g. ``point_acc``.
        hits: hits per class (C,), integers.
        pairs: pairs per class (C,), integers.
        names: the C class names.

    Returns:
        ``<prefix>_weighted`` (all hits over all pairs), ``<prefix>_macro`` (mean of the
        per-class rates over classes with pairs) and ``<prefix>_<name>`` for those classes.
    """
    has = (pairs > 0).nonzero().flatten().tolist()
    total = sum(int(pairs[c]) for c in has)
    rates = {names[c]: int(hits[c]) / int(pairs[c]) for c in has}
    out = {
        f"{prefix}_weighted": sum(int(hits[c]) for c in has) / total if total else math.nan,
        f"{prefix}_macro": sum(rates.values()) / len(rates) if rates else math.nan,
    }
    out.update({f"{prefix}_{name}": rate for name, rate in rates.items()})
    return out


def localization_accuracy(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    class_names: Sequence[str] | None = None,
    apply_sigmoid: bool = True,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Point, IoBB and IoU accuracy of one batch of CAMs (a one-shot ``LocalizationAccumulator``).

    Args:
        cams: raw class maps (N, C, h, w), torch or numpy, on any device.
        boxes: N lists of ``(x, y, w, h, class_index)`` in input pixels.
        image_size: (H, W) of the network input.
        class_names: names for the per-class keys (default: the class indices).
        apply_sigmoid: False when ``cams`` already are probabilities in [0, 1] (values outside
            are refused).
        thresholds: IoBB / IoU thresholds.

    Returns:
        ``point_acc_{weighted,macro,<class>}``, ``iobb<t>_...`` and ``iou<t>_...`` per threshold
        ``t``; ``<class>`` is the class name (or index); classes without boxes are omitted.
        Raises ``ValueError`` for bad boxes (one entirely outside the image included) or maps
        (with ``apply_sigmoid=False``, values outside [0, 1]).
    """
    cams = as_cams(cams)
    acc = LocalizationAccumulator(
        cams.shape[1],
        image_size,
        class_names=class_names,
        apply_sigmoid=apply_sigmoid,
        thresholds=thresholds,
    )
    acc.update(cams, boxes)
    return acc.compute()
