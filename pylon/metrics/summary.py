"""Mean, standard deviation and count of each metric across the seed runs of one experiment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd


def _rows(runs) -> list[Mapping]:
    if isinstance(runs, pd.DataFrame):
        return runs.to_dict("records")
    rows: list[Mapping] = []
    for run in runs:
        if isinstance(run, pd.DataFrame):
            rows.extend(run.to_dict("records"))
        elif isinstance(run, (pd.Series, Mapping)):
            rows.append(dict(run))
        else:
            raise ValueError(
                f"each run must be a dict, Series or DataFrame, got {type(run).__name__}"
            )
    return rows


def summarize_seeds(
    runs: pd.DataFrame | Iterable[Mapping | pd.Series | pd.DataFrame],
    *,
    exclude: Iterable[str] = ("seed",),
) -> pd.DataFrame:
    """Summarise runs (one metric dict, Series or DataFrame row per seed) per metric.

    Args:
        runs: a DataFrame with one row per run, or an iterable of dicts, Series or DataFrames.
        exclude: columns that are not metrics (skipped).

    Returns:
        A DataFrame with columns ``metric, mean, std, n`` in first-seen metric order; ``std`` is
        the sample standard deviation (ddof=1, NaN for a single run) and ``n`` counts the runs that
        report the metric with a non-NaN value. Raises ``ValueError`` for no runs or a value that
        is not a number.
    """
    rows = _rows(runs)
    if not rows:
        raise ValueError("summarize_seeds needs at least one run")
    skip = set(exclude)
    metrics: list[str] = []
    for row in rows:
        metrics.extend(k for k in row if k not in skip and k not in metrics)
    frame = pd.DataFrame(rows, columns=metrics)
    for name in metrics:
        values = pd.to_numeric(frame[name], errors="coerce")
        bad = values.isna() & frame[name].notna()
        if bad.any():
            run = int(bad.to_numpy().nonzero()[0][0])
            raise ValueError(
                f"run {run}: metric {name!r} is not a number: {frame[name].iloc[run]!r}"
            )
        frame[name] = values
    return pd.DataFrame(
        {
            "metric": metrics,
            "mean": frame.mean().to_numpy(),
            "std": frame.std(ddof=1).to_numpy(),
            "n": frame.count().to_numpy(),
        }
    )
