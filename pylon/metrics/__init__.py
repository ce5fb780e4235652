"""Classification (AUROC) and localization (point, IoBB, IoU accuracy) metrics, as in the paper."""

from pylon.metrics.auroc import AUROCAccumulator, auroc
from pylon.metrics.bootstrap import (
    BootstrapResult,
    bootstrap_ci,
    format_ci,
    format_comparison,
    paired_bootstrap,
)
from pylon.metrics.localization import LocalizationAccumulator, localization_accuracy
from pylon.metrics.pairs import PairScores, score_pairs
from pylon.metrics.peaks import peak_locations
from pylon.metrics.sizes import by_size, records_from_pair_scores, size_buckets
from pylon.metrics.summary import summarize_seeds

__all__ = [
    "AUROCAccumulator",
    "BootstrapResult",
    "LocalizationAccumulator",
    "PairScores",
    "auroc",
    "bootstrap_ci",
    "by_size",
    "format_ci",
    "format_comparison",
    "localization_accuracy",
    "paired_bootstrap",
    "peak_locations",
    "records_from_pair_scores",
    "score_pairs",
    "size_buckets",
    "summarize_seeds",
]
