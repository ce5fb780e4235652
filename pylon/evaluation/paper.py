"""The paper-style table of a set of experiments: one row per model, AUROC (macro, weighted) and
point localization (weighted) as mean +- std over seeds, with the published values beside ours."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from pylon.evaluation.evaluate import summarize_experiment

COLUMNS = ("auroc_macro", "auroc_weighted", "point_acc_weighted")
# Published values the project knows (PYLON paper, NIH ChestX-ray14 at 256 px, resnet50, ImageNet).
PUBLISHED: dict[str, dict[str, float]] = {
    "nih256-pylon": {"auroc_macro": 0.818, "point_acc_weighted": 0.62},
    "nih256-cam": {"point_acc_weighted": 0.45},
}


def paper_table(experiment_dirs: Iterable[str | Path]) -> pd.DataFrame:
    """Summarise experiments (``runs/<experiment>``, each with evaluated seed folders).

    Args:
        experiment_dirs: experiment folders; the folder name is the experiment (preset) name.

    Returns:
        One row per experiment with ``experiment``, ``n`` (seeds evaluated) and for each of
        :data:`COLUMNS` its ``<metric>_mean``, ``<metric>_std`` (sample std, NaN for one seed)
        and ``<metric>_published`` (NaN where the paper's value is not known).

    Raises:
        ValueError: when a folder has no evaluated seed (run ``pylon evaluate`` first).
    """
    rows = []
    for folder in map(Path, experiment_dirs):
        summary = summarize_experiment(folder)
        if not summary:
            raise ValueError(f"{folder}: no evaluated seed folder (eval_auc.csv / eval_loc.csv)")
        stats = pd.concat(summary.values()).set_index("metric")
        row: dict[str, object] = {"experiment": folder.name, "n": int(stats["n"].max())}
        for metric in COLUMNS:
            known = metric in stats.index
            row[f"{metric}_mean"] = float(stats.at[metric, "mean"]) if known else float("nan")
            row[f"{metric}_std"] = float(stats.at[metric, "std"]) if known else float("nan")
            published = PUBLISHED.get(folder.name, {}).get(metric, float("nan"))
            row[f"{metric}_published"] = published
        rows.append(row)
    return pd.DataFrame(rows)
