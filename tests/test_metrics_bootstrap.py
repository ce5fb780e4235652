"""Bootstrap intervals against plain loops over resamples written here from the definition.

Each loop takes the documented index matrix (``numpy.random.default_rng(seed).integers(0, n,
size=(R, n))``, or ``RandomState(seed).choice`` per resample for the legacy draws), builds every
resample's list of pairs image by image and computes the statistic with Python sums.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import pylon.metrics.bootstrap as bootstrap_module
from pylon.metrics.bootstrap import (
    bootstrap_ci,
    format_ci,
    format_comparison,
    paired_bootstrap,
    paired_p_value,
    resample_indices,
)
from pylon.metrics.records import PairRecords


def make_records(image_index, class_index, value):
    n = len(image_index)
    return PairRecords(
        image_index=torch.tensor(image_index, dtype=torch.long),
        class_index=torch.tensor(class_index, dtype=torch.long),
        value=torch.tensor(value, dtype=torch.float64),
        box_area=torch.ones(n, dtype=torch.long),
        image_area=torch.full((n,), 100, dtype=torch.long),
    )


def random_records(seed, num_images=40, num_classes=4, hits=True, nan_share=0.1, rare_class=True):
    """Images with 0-3 pairs each; class ``num_classes - 1`` on two images only (so it is absent
    from some resamples); some NaN values."""
    rng = np.random.default_rng(seed)
    image, cls, value = [], [], []
    for i in range(num_images):
        for c in rng.choice(num_classes - 1, size=rng.integers(0, 4), replace=False):
            image.append(i)
            cls.append(int(c))
            value.append(float(rng.integers(0, 2)) if hits else float(rng.random()))
    if rare_class:
        for i in (3, 17):
            image.append(i)
            cls.append(num_classes - 1)
            value.append(1.0 if i == 3 else 0.0)
    value = np.array(value)
    value[rng.random(len(value)) < nan_share] = np.nan
    return make_records(image, cls, value.tolist())


def loop_statistic(records, idx_row, columns, num_classes, statistic):
    """The statistic of one resample (images ``columns[idx_row]``), by Python loops."""
    by_image = {}
    for i, c, v in zip(
        records.image_index.tolist(),
        records.class_index.tolist(),
        records.value.tolist(),
        strict=True,
    ):
        by_image.setdefault(i, []).append((c, v))
    pairs = []
    for j in idx_row:
        pairs += by_image.get(int(columns[j]), [])
    pairs = [(c, v) for c, v in pairs if not math.isnan(v)]
    if statistic == "pooled":
        return sum(v for _, v in pairs) / len(pairs) if pairs else math.nan
    per_class = {}
    for c, v in pairs:
        per_class.setdefault(c, []).append(v)
    if statistic == "macro":
        means = [sum(vs) / len(vs) for vs in per_class.values()]
        return sum(means) / len(means) if means else math.nan
    vs = per_class.get(statistic, [])
    return sum(vs) / len(vs) if vs else math.nan


def loop_samples(records, num_classes, statistic, idx, columns):
    return np.array([loop_statistic(records, row, columns, num_classes, statistic) for row in idx])


def present_images(*parts):
    return sorted(set().union(*(set(p.image_index.tolist()) for p in parts)))


@pytest.mark.parametrize("statistic", ["pooled", "macro", 0, 3])
def test_bootstrap_matches_loop(statistic):
    records = random_records(1, hits=False)
    columns = present_images(records)
    idx = np.random.default_rng(7).integers(0, len(columns), size=(300, len(columns)))
    expected = loop_samples(records, 4, statistic, idx, columns)
    out = bootstrap_ci(records, 4, statistic=statistic, resamples=300, seed=7)
    np.testing.assert_allclose(out.samples, expected, rtol=1e-12, atol=0, equal_nan=True)
    kept = expected[~np.isnan(expected)]
    low, high = np.percentile(kept, [2.5, 97.5])
    assert out.low == pytest.approx(low, rel=1e-12) and out.high == pytest.approx(high, rel=1e-12)
    assert out.undefined_resamples == int(np.isnan(expected).sum())
    assert out.n_images == len(columns) and out.resamples == 300
    full = loop_statistic(records, range(len(columns)), columns, 4, statistic)
    assert out.estimate == pytest.approx(full, rel=1e-12) and out.full_data == out.estimate
    assert out.bootstrap_mean == pytest.approx(kept.mean(), rel=1e-12)
    assert out.low <= out.high


def test_pooled_hits_are_exact():
    records = random_records(2, hits=True)
    columns = present_images(records)
    idx = resample_indices(len(columns), 200, seed=0)
    out = bootstrap_ci(records, 4, resamples=200)
    assert out.samples.tolist() == loop_samples(records, 4, "pooled", idx, columns).tolist()
    assert out.n == int((~torch.isnan(records.value)).sum())


def test_macro_with_classes_missing_from_resamples():
    records = random_records(3, hits=True)
    columns = present_images(records)
    idx = resample_indices(len(columns), 400, seed=1)
    rare = [columns.index(3), columns.index(17)]
    missing = ~np.isin(idx, rare).any(axis=1)
    assert missing.sum() > 10  # the rare class is absent from these resamples
    out = bootstrap_ci(records, 4, statistic="macro", resamples=400, seed=1)
    expected = loop_samples(records, 4, "macro", idx, columns)
    np.testing.assert_allclose(out.samples, expected, rtol=1e-12, atol=0)
    # Absent: the mean over the other three classes, not a 0 for the rare class.
    three = [loop_samples(records, 4, c, idx[missing], columns) for c in range(3)]
    np.testing.assert_allclose(out.samples[missing], np.mean(three, axis=0), rtol=1e-12)
    # The rare class alone: its absent resamples are undefined and left out of the interval.
    rare_out = bootstrap_ci(records, 4, statistic=3, resamples=400, seed=1)
    assert rare_out.undefined_resamples == int(missing.sum())
    assert np.isnan(rare_out.samples[missing]).all()
    assert not np.isnan([rare_out.low, rare_out.high]).any()


def test_nan_values_are_left_out():
    records = random_records(4, hits=False, nan_share=0.3)
    defined = ~torch.isnan(records.value)
    assert int((~defined).sum()) > 5
    # Same images resampled (num_images), NaN pairs dropped: the same resamples.
    kwargs = dict(resamples=200, seed=3, num_images=40)
    for statistic in ("pooled", "macro", 1):
        with_nan = bootstrap_ci(records, 4, statistic=statistic, **kwargs)
        without = bootstrap_ci(records.select(defined), 4, statistic=statistic, **kwargs)
        np.testing.assert_array_equal(with_nan.samples, without.samples)
        assert with_nan.estimate == without.estimate and with_nan.n == without.n


def test_num_images_resamples_images_without_pairs():
    records = random_records(5)
    columns = list(range(50))  # 10 images beyond those with pairs, and some without pairs
    idx = resample_indices(50, 200, seed=2)
    out = bootstrap_ci(records, 4, resamples=200, seed=2, num_images=50)
    np.testing.assert_allclose(out.samples, loop_samples(records, 4, "pooled", idx, columns))
    assert out.n_images == 50
    with pytest.raises(ValueError):
        bootstrap_ci(records, 4, num_images=30)


def test_blocks_of_resamples_give_the_same_draws(monkeypatch):
    records = random_records(6, hits=False)
    whole = bootstrap_ci(records, 4, statistic="macro", resamples=250, seed=4)
    monkeypatch.setattr(bootstrap_module, "_BLOCK_ENTRIES", 7 * whole.n_images)  # 7 per block
    blocked = bootstrap_ci(records, 4, statistic="macro", resamples=250, seed=4)
    # The same draws; the matrix products may sum in another order (an ulp).
    np.testing.assert_allclose(whole.samples, blocked.samples, rtol=1e-14, atol=0)
    assert resample_indices(13, 10, seed=5).tolist() == (
        np.random.default_rng(5).integers(0, 13, size=(10, 13)).tolist()
    )


def test_seed_changes_the_draws_and_default_is_reproducible():
    records = random_records(7, hits=False)
    a = bootstrap_ci(records, 4)
    b = bootstrap_ci(records, 4)
    c = bootstrap_ci(records, 4, seed=1)
    assert a.resamples == 1000 and a.confidence == 0.95
    np.testing.assert_array_equal(a.samples, b.samples)
    assert not np.array_equal(a.samples, c.samples)


def chexlocalize_figure(table: pd.DataFrame, task: str, seed=0, replicates=1000, level=0.05):
    """CheXlocalize's eval.py (bootstrap_metric, compute_cis) re-written for one task: rows are
    CXRs, NaN cells are skipped by pandas' mean."""
    np.random.seed(seed)
    performances = []
    for _ in range(replicates):
        sample_ids = np.random.choice(len(table), size=len(table), replace=True)
        performances.append(table.iloc[sample_ids][task].mean())
    series = pd.Series(performances).sort_values()
    lower = series.iloc[int(level / 2 * len(series)) - 1]
    upper = series.iloc[int((1 - level / 2) * len(series)) - 1]
    return lower, series.mean(), upper


def test_chexlocalize_method_matches_their_loop():
    # 60 CXRs x 3 tasks; NaN where the CXR has no ground truth of the task.
    rng = np.random.default_rng(8)
    table = pd.DataFrame(rng.random((60, 3)), columns=["a", "b", "c"])
    table = table.mask(rng.random((60, 3)) < 0.4)
    image, cls, value = [], [], []
    for i in range(60):
        for c, task in enumerate(table.columns):
            if not math.isnan(table.iloc[i][task]):
                image.append(i)
                cls.append(c)
                value.append(float(table.iloc[i][task]))
    records = make_records(image, cls, value)
    for c, task in enumerate(table.columns):
        lower, mean, upper = chexlocalize_figure(table, task)
        out = bootstrap_ci(records, 3, statistic=c, method="chexlocalize", num_images=60)
        assert out.undefined_resamples == 0
        assert out.low == pytest.approx(lower, rel=1e-12)
        assert out.high == pytest.approx(upper, rel=1e-12)
        assert out.estimate == pytest.approx(mean, rel=1e-12)
        assert out.full_data == pytest.approx(table[task].mean(), rel=1e-12)
    # 90 %: their confidence_level 0.1 (1 - 0.9 in floats is below 0.1: positions 49 and 949).
    lower, _, upper = chexlocalize_figure(table, "b", seed=3, level=0.1)
    out = bootstrap_ci(records, 3, statistic=1, method="chexlocalize", num_images=60, seed=3,
                       confidence=0.9)  # fmt: skip
    assert (out.low, out.high) == pytest.approx((lower, upper), rel=1e-12)
    # The legacy draws, literally: RandomState(seed).choice per resample.
    rs = np.random.RandomState(0)
    expected = np.stack([rs.choice(60, size=60, replace=True) for _ in range(20)])
    np.testing.assert_array_equal(resample_indices(60, 20, seed=0, draws="legacy"), expected)


def test_paired_bootstrap_matches_loop():
    a = random_records(9, hits=True)
    b = make_records(
        a.image_index.tolist(),
        a.class_index.tolist(),
        np.where(np.random.default_rng(0).random(len(a)) < 0.35, 1.0, 0.0).tolist(),
    )
    columns = present_images(a, b)
    for statistic in ("pooled", "macro", 2):
        out = paired_bootstrap(a, b, 4, statistic=statistic, resamples=500, seed=11)
        idx = np.random.default_rng(11).integers(0, len(columns), size=(500, len(columns)))
        diff = loop_samples(a, 4, statistic, idx, columns) - loop_samples(
            b, 4, statistic, idx, columns
        )
        np.testing.assert_allclose(out.samples, diff, rtol=1e-12, atol=1e-15)
        kept = diff[~np.isnan(diff)]
        assert out.low == pytest.approx(np.percentile(kept, 2.5), abs=1e-12)
        assert out.high == pytest.approx(np.percentile(kept, 97.5), abs=1e-12)
        everything = range(len(columns))
        full = loop_statistic(a, everything, columns, 4, statistic) - loop_statistic(
            b, everything, columns, 4, statistic
        )
        assert out.estimate == pytest.approx(full, abs=1e-12)
        p = min(1.0, 2 * min((kept <= 0).mean(), (kept >= 0).mean()))
        assert out.p_value == pytest.approx(p, abs=1e-12)
        if statistic == "pooled":
            assert out.n == int((~torch.isnan(a.value)).sum()) + len(b)


def test_paired_bootstrap_of_a_method_with_itself():
    a = random_records(10, hits=False)
    out = paired_bootstrap(a, a, 4, resamples=100)
    assert out.estimate == 0 and out.low == 0 and out.high == 0
    assert out.p_value == 1.0
    line = format_comparison(out, "A", "B")
    assert line.startswith("A and B differ by 0.000 [0.000, 0.000], p = 1 (")


def test_paired_bootstrap_warns_when_images_differ():
    a = make_records([0, 1, 2], [0, 0, 0], [1.0, 0.0, 1.0])
    b = make_records([0, 1], [0, 0], [0.0, 0.0])
    with pytest.warns(UserWarning, match="one method only"):
        paired_bootstrap(a, b, 1, resamples=50)


def test_paired_p_value_definition():
    assert paired_p_value(np.array([1.0, 2.0, 3.0, -1.0])) == 0.5
    assert paired_p_value(np.array([1.0, 2.0, 3.0, 0.0])) == 0.5  # 0 counts on both sides
    assert paired_p_value(np.array([1.0, 2.0])) == 0.0
    assert paired_p_value(np.array([-1.0, 1.0, np.nan])) == 1.0
    assert math.isnan(paired_p_value(np.array([np.nan])))


def test_formatters():
    a = make_records(list(range(40)), [0] * 40, [1.0] * 35 + [0.0] * 5)
    b = make_records(list(range(40)), [0] * 40, [0.0] * 35 + [1.0] * 5)
    out = paired_bootstrap(a, b, 1, resamples=1000)
    assert out.p_value == 0.0
    line = format_comparison(out, "PYLON", "CAM")
    assert line == (
        f"PYLON beats CAM by 0.750 [{out.low:.3f}, {out.high:.3f}], p < 0.001 "
        "(pooled, 95 % paired bootstrap over 40 images, 1000 resamples)"
    )
    # Named the other way round: the better method comes first, the interval turned round.
    reverse = paired_bootstrap(b, a, 1, resamples=1000)
    assert reverse.low == -out.high and reverse.high == -out.low
    assert format_comparison(reverse, "CAM", "PYLON") == line
    assert "by 75.0 pp [" in format_comparison(out, "PYLON", "CAM", digits=1, percent=True)
    c = make_records(list(range(40)), [0] * 40, [1.0] * 33 + [0.0] * 7)
    weak = paired_bootstrap(a, c, 1, resamples=1000)
    assert 0 < weak.p_value < 1
    assert f"p = {weak.p_value:.3f}".rstrip("0") in format_comparison(weak, "A", "B")
    ci = bootstrap_ci(a, 1, resamples=200)
    assert format_ci(ci) == f"0.875 [{ci.low:.3f}, {ci.high:.3f}] (n = 40 pairs, 40 images)"
    assert format_ci(ci, digits=1, percent=True).startswith("87.5 % [")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(statistic="median"),
        dict(statistic=4),
        dict(statistic=True),
        dict(method="bca"),
        dict(confidence=1.0),
        dict(resamples=0),
        dict(draws="sobol"),
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        bootstrap_ci(random_records(0), 4, **kwargs)


@pytest.mark.parametrize("method", ["percentile", "chexlocalize"])
def test_no_pairs_gives_nan(method):
    empty = PairRecords.empty()
    out = bootstrap_ci(empty, 3, resamples=20, method=method)
    assert math.isnan(out.estimate) and math.isnan(out.low) and math.isnan(out.high)
    assert out.n == 0 and out.undefined_resamples == 20
    assert math.isnan(paired_bootstrap(empty, empty, 3, resamples=20, method=method).p_value)
