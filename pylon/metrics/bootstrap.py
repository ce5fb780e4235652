"""Bootstrap confidence intervals over images for statistics of ``PairRecords``.

The unit of resampling is the image: a resample draws ``n`` images with replacement from the
``n`` evaluated images, and every pair of a drawn image comes with it (as often as the image is
drawn), so pairs of one image stay together.

**Draws.** Resample ``r`` takes the images ``idx[r]`` of the index matrix

- ``draws="generator"`` (default of ``method="percentile"``):
  ``idx = numpy.random.default_rng(seed).integers(0, n, size=(resamples, n))``;
- ``draws="legacy"`` (default of ``method="chexlocalize"``): ``rs =
  numpy.random.RandomState(seed)`` and ``idx[r] = rs.choice(n, size=n, replace=True)`` for
  ``r = 0, 1, ...`` in turn: CheXlocalize's ``np.random.seed(seed)`` then ``np.random.choice``
  per replicate;

so a plain loop over ``r`` with the same matrix reproduces every resample. Column ``j`` is the
``j``-th evaluated image: the images ``0 .. num_images - 1`` when ``num_images`` is given (images
without pairs included, as CheXlocalize resamples all its rows), else the distinct
``image_index`` values of the records in increasing order.

**Computation.** With ``K[r, j]`` the times image ``j`` is drawn in resample ``r`` and
``S[j, c]``, ``N[j, c]`` the sum and count of image ``j``'s defined values of class ``c``, the
resampled sums and counts of every resample are the matrix products ``K @ S`` and ``K @ N``
(exact: counts are small integers; sums of 0/1 hits are integers in float64), computed for
blocks of resamples at a time; no resampled data is materialised.

**Statistics** (NaN values are left out throughout, as in ``reduce_records``):

- ``"pooled"``: resampled sum of all defined values over their resampled count;
- ``"macro"``: per class, resampled sum over resampled count, then the mean over the classes
  that have at least one defined pair *in that resample*; a class absent from a resample is left
  out of that resample's mean (not counted as 0), as ``reduce_records`` leaves out classes
  without pairs;
- a class index ``c``: that class's resampled sum over its resampled count.

A resample whose statistic is undefined (no defined pair, or none of class ``c``) is left out of
the interval and counted in ``undefined_resamples``.

**Intervals.** ``method="percentile"``: the estimate is the statistic of the full data and the
interval the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the resampled
statistics (``numpy.percentile``, linear interpolation). ``method="chexlocalize"``: the figure
CheXlocalize reports (rajpurkarlab/cheXlocalize ``eval.py``, ``compute_cis``): the estimate is
the mean of the resampled statistics, the interval the sorted resampled statistics at 0-based
positions ``int(a / 2 * R) - 1`` and ``int((1 - a / 2) * R) - 1`` for ``a = 1 - confidence``,
i.e. the 25th and 975th of 1,000; their code rounds to 3 decimals, we do not.
``BootstrapResult.full_data`` always holds the full-data statistic.

**Paired comparison** (``paired_bootstrap``): both methods' records are resampled with the same
draws, the statistic is ``stat(a) - stat(b)`` per resample. The two-sided p-value is the one
obtained by inverting the percentile interval, ``p = min(1, 2 * min(#{d* <= 0}, #{d* >= 0}) /
R')`` over the ``R'`` defined resampled differences ``d*``: the smallest ``1 - confidence`` whose
equal-tailed percentile interval just reaches 0 (Efron & Tibshirani, *An Introduction to the
Bootstrap*, 1993, on confidence intervals and tests; a difference of exactly 0 counts on both
sides). ``p = 0`` means no resample reached 0: read it as ``p < 1 / R'``, as ``format_comparison``
writes it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pylon.metrics.records import PairRecords, reduce_records

# Entries of one block of the (resamples, images) count matrix.
_BLOCK_ENTRIES = 1 << 20


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """A bootstrap interval of one statistic (or of a difference, for ``paired_bootstrap``).

    ``estimate`` is the reported figure (the full-data statistic for ``method="percentile"``,
    the mean of the resampled statistics for ``"chexlocalize"``); ``low`` / ``high`` the
    interval; ``n`` the defined pairs the statistic reads (of both methods for a difference);
    ``n_images`` the images resampled; ``samples`` the resampled statistics, NaN for an
    undefined resample; ``p_value`` only for a paired comparison.
    """

    estimate: float
    low: float
    high: float
    n: int
    n_images: int
    full_data: float
    bootstrap_mean: float
    statistic: str | int
    method: str
    confidence: float
    resamples: int
    undefined_resamples: int
    samples: np.ndarray
    p_value: float | None = None


def resample_indices(
    n_images: int, resamples: int = 1000, seed: int = 0, draws: str = "generator"
) -> np.ndarray:
    """The (resamples, n_images) index matrix of the draws (see the module docstring)."""
    return np.concatenate(list(_index_blocks(n_images, resamples, seed, draws, resamples)))


def _index_blocks(n: int, resamples: int, seed: int, draws: str, block: int):
    """The rows of the index matrix, ``block`` rows at a time (the same numbers as one call)."""
    if draws == "generator":
        rng = np.random.default_rng(seed)

        def draw(rows):
            return rng.integers(0, n, size=(rows, n)) if n else np.zeros((rows, 0), np.int64)

    elif draws == "legacy":
        rs = np.random.RandomState(seed)

        def draw(rows):
            rows = [
                rs.choice(n, size=n, replace=True) if n else np.zeros(0, int) for _ in range(rows)
            ]
            return np.stack(rows).astype(np.int64)

    else:
        raise ValueError(f"draws must be 'generator' or 'legacy', got {draws!r}")
    for start in range(0, resamples, block):
        yield draw(min(block, resamples - start))


def _units(parts: Sequence[PairRecords], num_images: int | None) -> tuple[np.ndarray, int]:
    """The column of every record of every part, and the number of columns."""
    images = [p.image_index.numpy() for p in parts]
    if num_images is not None:
        for img in images:
            if len(img) and (img.min() < 0 or img.max() >= num_images):
                raise ValueError(f"image_index must lie in [0, {num_images}) with num_images given")
        return images, int(num_images)
    distinct = np.unique(np.concatenate(images)) if images else np.zeros(0, dtype=np.int64)
    return [np.searchsorted(distinct, img) for img in images], len(distinct)


def _per_image(records: PairRecords, unit: np.ndarray, n_units: int, num_classes: int):
    """``S``, ``N`` (n_units, num_classes): sums and counts of defined values per image, class."""
    value = records.value.double().numpy()
    cls = records.class_index.numpy()
    if len(cls) and (cls.min() < 0 or cls.max() >= num_classes):
        raise ValueError(f"class_index must lie in [0, {num_classes})")
    defined = ~np.isnan(value)
    sums = np.zeros((n_units, num_classes))
    counts = np.zeros((n_units, num_classes))
    np.add.at(sums, (unit[defined], cls[defined]), value[defined])
    np.add.at(counts, (unit[defined], cls[defined]), 1.0)
    return sums, counts


def _check_statistic(statistic, num_classes: int) -> str | int:
    if statistic in ("pooled", "macro"):
        return statistic
    if isinstance(statistic, (int, np.integer)) and not isinstance(statistic, bool):
        if not 0 <= int(statistic) < num_classes:
            raise ValueError(f"class statistic {statistic} outside [0, {num_classes})")
        return int(statistic)
    raise ValueError(f"statistic must be 'pooled', 'macro' or a class index, got {statistic!r}")


def _statistic(sums: np.ndarray, counts: np.ndarray, statistic: str | int) -> np.ndarray:
    """The statistic of every row of resampled ``sums``, ``counts`` (R, C) -> (R,), NaN if
    undefined."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if statistic == "pooled":
            total = counts.sum(axis=1)
            return np.where(total > 0, sums.sum(axis=1) / np.maximum(total, 1), np.nan)
        if statistic == "macro":
            present = counts > 0
            per_class = np.where(present, sums / np.maximum(counts, 1), 0.0)
            k = present.sum(axis=1)
            return np.where(k > 0, per_class.sum(axis=1) / np.maximum(k, 1), np.nan)
        c = statistic
        return np.where(counts[:, c] > 0, sums[:, c] / np.maximum(counts[:, c], 1), np.nan)


def _full_data(records: PairRecords, num_classes: int, statistic: str | int) -> tuple[float, int]:
    out = reduce_records(records, num_classes)
    if statistic in ("pooled", "macro"):
        return float(out[statistic]), int(out["n"])
    return float(out["per_class"][statistic]), int(out["n_per_class"][statistic])


def _resampled(tables, n_units, statistic, resamples, seed, draws):
    """The statistic of every resample for each (sums, counts) table, (len(tables), R)."""
    block = max(1, _BLOCK_ENTRIES // max(n_units, 1))
    out = np.empty((len(tables), resamples))
    row = 0
    for idx in _index_blocks(n_units, resamples, seed, draws, block):
        rows = len(idx)
        flat = (idx + n_units * np.arange(rows)[:, None]).ravel()
        times = np.bincount(flat, minlength=rows * n_units).reshape(rows, n_units).astype(float)
        for t, (sums, counts) in enumerate(tables):
            out[t, row : row + rows] = _statistic(times @ sums, times @ counts, statistic)
        row += rows
    return out


def _interval(samples: np.ndarray, full: float, method: str, confidence: float):
    """(estimate, low, high, bootstrap mean, undefined resamples) of the resampled statistics."""
    kept = np.sort(samples[~np.isnan(samples)])
    undefined = len(samples) - len(kept)
    if not len(kept):
        estimate = full if method == "percentile" else math.nan
        return estimate, math.nan, math.nan, math.nan, undefined
    mean = float(kept.mean())
    if method == "percentile":
        tails = [round(50 * (1 - confidence), 10), round(50 * (1 + confidence), 10)]
        low, high = np.percentile(kept, tails)
        return full, float(low), float(high), mean, undefined
    # CheXlocalize's compute_cis with confidence_level = 1 - confidence (0.05), rounded so that
    # 1 - 0.95 gives their 0.05 and positions 24 and 974 of 1,000.
    alpha = round(1 - confidence, 12)
    lower = max(int(alpha / 2 * len(kept)) - 1, 0)
    upper = max(int((1 - alpha / 2) * len(kept)) - 1, 0)
    return mean, float(kept[lower]), float(kept[upper]), mean, undefined


def _check_args(method: str, confidence: float, resamples: int, draws: str | None) -> str:
    if method not in ("percentile", "chexlocalize"):
        raise ValueError(f"method must be 'percentile' or 'chexlocalize', got {method!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"resamples must be positive, got {resamples}")
    if draws is None:
        draws = "generator" if method == "percentile" else "legacy"
    if draws not in ("generator", "legacy"):
        raise ValueError(f"draws must be 'generator' or 'legacy', got {draws!r}")
    return draws


def bootstrap_ci(
    records: PairRecords,
    num_classes: int,
    *,
    statistic: str | int = "pooled",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
    draws: str | None = None,
    num_images: int | None = None,
) -> BootstrapResult:
    """Bootstrap confidence interval over images of a statistic of ``records``.

    Args:
        records: the scored pairs of one metric (``image_index`` global over the evaluated set).
        num_classes: classes of the maps.
        statistic: ``"pooled"`` (mean over defined pairs), ``"macro"`` (mean over classes with
            defined pairs) or a class index (that class's mean); see the module docstring.
        resamples: bootstrap resamples.
        confidence: the interval's coverage.
        seed: the seed of the draws.
        method: ``"percentile"`` (estimate on the full data, percentile interval) or
            ``"chexlocalize"`` (their reported figure: mean of the resampled statistics, 25th and
            975th sorted values of 1,000).
        draws: ``"generator"`` or ``"legacy"`` (default: by ``method``); see the module docstring.
        num_images: resample the images ``0 .. num_images - 1`` (all images of the evaluated
            set, also those without pairs); default: the images that appear in ``records``.

    Returns:
        A ``BootstrapResult``: ``estimate``, ``low``, ``high``, ``n`` (defined pairs read) and more.
    """
    draws = _check_args(method, confidence, resamples, draws)
    statistic = _check_statistic(statistic, num_classes)
    (unit,), n_units = _units([records], num_images)
    full, n = _full_data(records, num_classes, statistic)
    table = _per_image(records, unit, n_units, num_classes)
    samples = _resampled([table], n_units, statistic, resamples, seed, draws)[0]
    estimate, low, high, mean, undefined = _interval(samples, full, method, confidence)
    return BootstrapResult(
        estimate, low, high, n, n_units, full, mean, statistic, method, confidence, resamples,
        undefined, samples,
    )  # fmt: skip


def paired_bootstrap(
    records_a: PairRecords,
    records_b: PairRecords,
    num_classes: int,
    *,
    statistic: str | int = "pooled",
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "percentile",
    draws: str | None = None,
    num_images: int | None = None,
) -> BootstrapResult:
    """Paired bootstrap of ``stat(a) - stat(b)`` for two methods scored on the same images.

    Both methods' records are resampled with the same draws of images (columns: the images of
    either method, or ``0 .. num_images - 1``). Arguments as for ``bootstrap_ci``.

    Returns:
        A ``BootstrapResult`` of the difference with ``p_value`` (two-sided, percentile-interval
        inversion; see the module docstring); ``n`` counts the defined pairs of both methods.
    """
    draws = _check_args(method, confidence, resamples, draws)
    statistic = _check_statistic(statistic, num_classes)
    only = set(records_a.image_index.tolist()) ^ set(records_b.image_index.tolist())
    if only:
        warnings.warn(
            f"{len(only)} images are scored by one method only (e.g. image {min(only)}): "
            "the comparison is not on the same images",
            stacklevel=2,
        )
    (unit_a, unit_b), n_units = _units([records_a, records_b], num_images)
    full_a, n_a = _full_data(records_a, num_classes, statistic)
    full_b, n_b = _full_data(records_b, num_classes, statistic)
    tables = [
        _per_image(records_a, unit_a, n_units, num_classes),
        _per_image(records_b, unit_b, n_units, num_classes),
    ]
    stat_a, stat_b = _resampled(tables, n_units, statistic, resamples, seed, draws)
    samples = stat_a - stat_b
    estimate, low, high, mean, undefined = _interval(samples, full_a - full_b, method, confidence)
    return BootstrapResult(
        estimate, low, high, n_a + n_b, n_units, full_a - full_b, mean, statistic, method,
        confidence, resamples, undefined, samples, paired_p_value(samples),
    )  # fmt: skip


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of resampled differences: ``min(1, 2 * min(share <= 0,
    share >= 0))`` over the defined (non-NaN) ones; NaN if none is defined."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if not len(d):
        return math.nan
    return float(min(1.0, 2 * min(np.count_nonzero(d <= 0), np.count_nonzero(d >= 0)) / len(d)))


def _number(x: float, digits: int, percent: str) -> str:
    if math.isnan(x):
        return "nan"
    return f"{100 * x:.{digits}f}{percent}" if percent else f"{x:.{digits}f}"


def _p_text(p: float | None, defined: int) -> str:
    if p is None or math.isnan(p):
        return "p = nan"
    if p == 0:
        return f"p < {1 / defined:.2g}"
    return f"p = {p:.2g}" if p < 0.01 else f"p = {p:.3f}".rstrip("0").rstrip(".")


def format_ci(result: BootstrapResult, *, digits: int = 3, percent: bool = False) -> str:
    """One line: ``0.612 [0.580, 0.641] (n = 812 pairs, 500 images)``; with ``percent``
    ``61.2 % [58.0 %, 64.1 %] (...)``, ``digits`` decimals either way."""
    unit = " %" if percent else ""
    value = ", ".join(_number(x, digits, unit) for x in (result.low, result.high))
    return (
        f"{_number(result.estimate, digits, unit)} [{value}] "
        f"(n = {result.n} pairs, {result.n_images} images)"
    )


def format_comparison(
    result: BootstrapResult,
    name_a: str = "A",
    name_b: str = "B",
    *,
    digits: int = 3,
    percent: bool = False,
) -> str:
    """One line of a paired comparison, e.g. ``PYLON beats CAM by 0.052 [0.031, 0.074], p =
    0.002 (pooled, 95 % paired bootstrap over 500 images, 1000 resamples)``.

    The better method (by the estimate) is named first, so the difference is non-negative; its
    interval is turned round with it (``A and B differ by 0.000 [...]`` for a zero estimate).
    ``p = 0`` is written ``p < 1/R``. With ``percent`` the figures are percentage points
    (``5.2 pp``), ``digits`` decimals either way.
    """
    unit = " pp" if percent else ""
    est, low, high = result.estimate, result.low, result.high
    if est < 0:
        name_a, name_b, est, low, high = name_b, name_a, -est, -high, -low
    who = f"{name_a} beats {name_b}" if est > 0 else f"{name_a} and {name_b} differ"
    what = result.statistic if isinstance(result.statistic, str) else f"class {result.statistic}"
    defined = result.resamples - result.undefined_resamples
    conf = f"{100 * result.confidence:g} %"
    how = "paired bootstrap" if result.method == "percentile" else "paired bootstrap, CheXlocalize"
    return (
        f"{who} by {_number(est, digits, unit)} "
        f"[{_number(low, digits, unit)}, {_number(high, digits, unit)}], "
        f"{_p_text(result.p_value, max(defined, 1))} "
        f"({what}, {conf} {how} over {result.n_images} images, {result.resamples} resamples)"
    )
