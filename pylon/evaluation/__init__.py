"""Scoring and showing trained models: metric CSVs and seed summaries, heatmap pages, post-hoc
CAMs, sweeps over seeds and the demo."""

from pylon.evaluation.evaluate import evaluate_run, summarize_experiment
from pylon.evaluation.overlay import image_to_rgb, overlay_image, resize_heatmap
from pylon.evaluation.pages import HeatmapRow, draw_heatmap_row, write_heatmap_pages

__all__ = [
    "HeatmapRow",
    "draw_heatmap_row",
    "evaluate_run",
    "image_to_rgb",
    "overlay_image",
    "resize_heatmap",
    "summarize_experiment",
    "write_heatmap_pages",
]
