"""Classification (AUROC) and localization (point, IoBB, IoU accuracy) metrics, as in the paper."""

from pylon.metrics.auroc import AUROCAccumulator, auroc
from pylon.metrics.localization import LocalizationAccumulator, localization_accuracy
from pylon.metrics.pairs import PairScores, score_pairs
from pylon.metrics.peaks import peak_locations
from pylon.metrics.summary import summarize_seeds

__all__ = [
    "AUROCAccumulator",
    "LocalizationAccumulator",
    "PairScores",
    "auroc",
    "localization_accuracy",
    "peak_locations",
    "score_pairs",
    "summarize_seeds",
]
