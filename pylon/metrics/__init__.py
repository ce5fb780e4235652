"""Classification (AUROC) and localization (point, IoBB, IoU accuracy) metrics, as in the paper."""

from pylon.metrics.auroc import AUROCAccumulator, auroc
from pylon.metrics.bootstrap import (
    BootstrapResult,
    bootstrap_ci,
    format_ci,
    format_comparison,
    paired_bootstrap,
)
from pylon.metrics.chexlocalize import hit_rate, segmentation_iou, tune_segmentation_threshold
from pylon.metrics.localization import LocalizationAccumulator, localization_accuracy
from pylon.metrics.maxboxacc import (
    BoxAccuracy,
    BoxIoURecords,
    box_accuracy,
    box_iou_records,
    box_iou_records_both,
    max_box_acc,
    records_at,
)
from pylon.metrics.pairs import PairScores, score_pairs
from pylon.metrics.peaks import peak_locations
from pylon.metrics.pointing import energy_pointing_game, pointing_game
from pylon.metrics.sizes import by_size, records_from_pair_scores, size_buckets
from pylon.metrics.summary import summarize_seeds

__all__ = [
    "AUROCAccumulator",
    "BootstrapResult",
    "BoxAccuracy",
    "BoxIoURecords",
    "LocalizationAccumulator",
    "PairScores",
    "auroc",
    "bootstrap_ci",
    "box_accuracy",
    "box_iou_records",
    "box_iou_records_both",
    "by_size",
    "energy_pointing_game",
    "format_ci",
    "format_comparison",
    "hit_rate",
    "localization_accuracy",
    "max_box_acc",
    "paired_bootstrap",
    "peak_locations",
    "pointing_game",
    "records_at",
    "records_from_pair_scores",
    "score_pairs",
    "segmentation_iou",
    "size_buckets",
    "summarize_seeds",
    "tune_segmentation_threshold",
]
