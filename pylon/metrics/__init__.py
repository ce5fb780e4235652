"""Classification (AUROC) and localization (point, IoBB, IoU accuracy) metrics, as in the paper."""

from pylon.metrics.auroc import AUROCAccumulator, auroc
from pylon.metrics.localization import (
    LocalizationAccumulator,
    PairScores,
    localization_accuracy,
    score_pairs,
)
from pylon.metrics.summary import summarize_seeds

__all__ = [
    "AUROCAccumulator",
    "LocalizationAccumulator",
    "PairScores",
    "auroc",
    "localization_accuracy",
    "score_pairs",
    "summarize_seeds",
]
