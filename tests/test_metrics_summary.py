"""summarize_seeds against numpy's mean and sample standard deviation."""

import math

import numpy as np
import pandas as pd
import pytest

from pylon.metrics import summarize_seeds


def test_mean_std_n_match_numpy():
    rng = np.random.default_rng(0)
    values = rng.random((5, 3))
    runs = [
        {"seed": s, "auroc_macro": a, "point_acc_weighted": b, "x": c}
        for s, (a, b, c) in enumerate(values)
    ]
    got = summarize_seeds(runs).set_index("metric")
    assert list(got.index) == ["auroc_macro", "point_acc_weighted", "x"]
    np.testing.assert_allclose(got["mean"], values.mean(axis=0))
    np.testing.assert_allclose(got["std"], values.std(axis=0, ddof=1))
    assert got["n"].tolist() == [5, 5, 5]


def test_frames_series_and_missing_metrics():
    runs = [
        pd.DataFrame({"seed": [0], "a": [0.5], "b": [1.0]}),
        pd.Series({"seed": 1, "a": 0.7}),
        {"seed": 2, "a": 0.9, "b": float("nan")},
    ]
    got = summarize_seeds(runs).set_index("metric")
    assert got.loc["a", "mean"] == pytest.approx(np.mean([0.5, 0.7, 0.9]))
    assert got.loc["a", "std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert (
        got.loc["b", "n"] == 1 and got.loc["b", "mean"] == 1.0 and math.isnan(got.loc["b", "std"])
    )
    wide = pd.DataFrame({"seed": [0, 1], "a": [1.0, 3.0]})
    assert summarize_seeds(wide).set_index("metric").loc["a", "std"] == pytest.approx(np.sqrt(2))


def test_non_numeric_metric_raises():
    with pytest.raises(ValueError, match=r"run 1: metric 'a'"):
        summarize_seeds([{"a": 1.0}, {"a": "oops"}])
    with pytest.raises(ValueError, match="at least one run"):
        summarize_seeds([])
