"""Area under the ROC curve per class, micro-, macro- and positive-count-weighted, via scikit-learn.

A class whose labels take a single value in the data has no defined AUROC: it is left out of the
per-class keys, the macro and the weighted average (with a warning). The micro average pools every
(image, class) entry of all classes, as scikit-learn's ``average="micro"`` does; the weighted
average weighs each class by its number of positives, as ``average="weighted"`` (the reference's).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def _as_matrix(values, name: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (N, num_classes), got {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return array


def auroc(logits, labels, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """AUROC of scores ``logits`` (N, C) against multi-hot ``labels`` (N, C).

    Args:
        logits: scores (N, C), torch or numpy; any monotonic score (logits or probabilities)
            gives the same result.
        labels: 0/1 targets (N, C).
        class_names: C names for the per-class keys (default: the class indices).

    Returns:
        ``auroc_micro``, ``auroc_macro``, ``auroc_weighted`` (mean over classes weighted by their
        positive counts) and ``auroc_<class>`` for each class with both label values.
    """
    scores = _as_matrix(logits, "logits")
    targets = _as_matrix(labels, "labels")
    if scores.shape != targets.shape:
        raise ValueError(f"logits {scores.shape} and labels {targets.shape} differ in shape")
    if not np.isin(targets, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    num_classes = scores.shape[1]
    if class_names is None:
        class_names = [str(c) for c in range(num_classes)]
    elif len(class_names) != num_classes:
        raise ValueError(f"got {len(class_names)} class_names for {num_classes} classes")

    per_class: dict[str, float] = {}
    positives: list[float] = []
    skipped = []
    for c, name in enumerate(class_names):
        if len(np.unique(targets[:, c])) < 2:
            skipped.append(name)
            continue
        per_class[f"auroc_{name}"] = float(roc_auc_score(targets[:, c], scores[:, c]))
        positives.append(float(targets[:, c].sum()))
    if skipped:
        warnings.warn(
            f"AUROC undefined for classes with a single label value, left out: {skipped}",
            stacklevel=2,
        )

    if len(np.unique(targets)) < 2:
        micro = math.nan
        warnings.warn("all labels are equal: micro AUROC is undefined (NaN)", stacklevel=2)
    else:
        micro = float(roc_auc_score(targets.ravel(), scores.ravel()))
    values = list(per_class.values())
    macro = float(np.mean(values)) if values else math.nan
    weighted = float(np.average(values, weights=positives)) if values else math.nan
    return {"auroc_micro": micro, "auroc_macro": macro, "auroc_weighted": weighted, **per_class}


class AUROCAccumulator:
    """Collects logits and labels batch by batch (they are small); ``compute`` calls ``auroc``."""

    def __init__(self, class_names: Sequence[str] | None = None):
        """An empty accumulator; ``class_names`` as for ``auroc``."""
        self.class_names = list(class_names) if class_names is not None else None
        self.logits: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def update(self, logits, labels) -> None:
        """Add one batch: ``logits`` (B, C) scores and ``labels`` (B, C) of 0/1."""
        scores, targets = _as_matrix(logits, "logits"), _as_matrix(labels, "labels")
        if scores.shape != targets.shape:
            raise ValueError(f"logits {scores.shape} and labels {targets.shape} differ in shape")
        if self.logits and scores.shape[1] != self.logits[0].shape[1]:
            raise ValueError(
                f"batch has {scores.shape[1]} classes, earlier batches {self.logits[0].shape[1]}"
            )
        self.logits.append(scores)
        self.labels.append(targets)

    def merge(self, other: AUROCAccumulator) -> AUROCAccumulator:
        """Append ``other``'s batches (another ``AUROCAccumulator``); returns ``self``."""
        self.logits.extend(other.logits)
        self.labels.extend(other.labels)
        return self

    def compute(self) -> dict[str, float]:
        """``auroc`` of every batch added so far (its keys)."""
        if not self.logits:
            raise ValueError("AUROCAccumulator.compute called before any update")
        return auroc(np.concatenate(self.logits), np.concatenate(self.labels), self.class_names)
