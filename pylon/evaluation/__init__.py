"""Scoring and showing trained models: running a model over a split, metric CSVs and seed
summaries, the paper table, heatmap pages and overlays, post-hoc CAMs, sweeps over seeds and the
demo. Imports models, data, training and metrics; never inference or cli.

Names are imported lazily, so that ``pylon.inference`` can use the overlay and the coordinate
mapping without loading Lightning. No exported name is also a submodule's name: importing a
submodule sets the package attribute of its name, which would then shadow the export (as
``paper_table``, the function, was shadowed by its module until the module became ``paper``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate_run": "pylon.evaluation.evaluate",
    "summarize_experiment": "pylon.evaluation.evaluate",
    "read_metrics": "pylon.evaluation.evaluate",
    "write_metrics": "pylon.evaluation.evaluate",
    "paper_table": "pylon.evaluation.paper",
    "write_run_heatmaps": "pylon.evaluation.heatmaps",
    "read_picked": "pylon.evaluation.heatmaps",
    "evaluate_run_posthoc": "pylon.evaluation.posthoc",
    "image_to_rgb": "pylon.evaluation.overlay",
    "overlay_image": "pylon.evaluation.overlay",
    "peak_overlay": "pylon.evaluation.overlay",
    "resize_heatmap": "pylon.evaluation.overlay",
    "write_png": "pylon.evaluation.overlay",
    "HeatmapRow": "pylon.evaluation.pages",
    "draw_heatmap_row": "pylon.evaluation.pages",
    "write_heatmap_pages": "pylon.evaluation.pages",
    "input_to_original": "pylon.evaluation.coordinates",
    "peaks_in_original": "pylon.evaluation.coordinates",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pylon.evaluation' has no attribute {name!r}")
