"""Localization figures by lesion size, and the paper's point / IoBB / IoU pairs as records.

A pair's size is the area of the union of its boxes as a share of the image
(``PairRecords.box_share``). ``size_buckets`` puts every pair into one bucket of a partition of
the shares; ``by_size`` reduces a metric's records per bucket (per class, pooled and macro, as
``reduce_records``). ``records_from_pair_scores`` turns the per-pair statistics of the paper's
metrics (``pylon.metrics.pairs.PairScores``) into ``PairRecords``, so that the point accuracy and
the IoBB / IoU accuracy join the benchmark (size buckets, bootstrap intervals).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pylon.metrics.pairs import PairScores
from pylon.metrics.peaks import as_image_size
from pylon.metrics.records import PairRecords, reduce_records

DEFAULT_EDGES = (0.01, 0.10)
DEFAULT_NAMES = ("small", "medium", "large")


def _check_buckets(edges: Sequence[float], names: Sequence[str]) -> tuple[float, ...]:
    edges = tuple(float(e) for e in edges)
    if len(names) != len(edges) + 1:
        raise ValueError(f"{len(edges)} edges need {len(edges) + 1} names, got {len(names)}")
    if len(set(names)) != len(names):
        raise ValueError(f"bucket names must differ, got {tuple(names)}")
    if any(not (math.isfinite(e) and e > 0) for e in edges):
        raise ValueError(f"edges must be finite and positive, got {edges}")
    if any(a >= b for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError(f"edges must increase strictly, got {edges}")
    return edges


def size_buckets(
    records: PairRecords,
    edges: Sequence[float] = DEFAULT_EDGES,
    names: Sequence[str] = DEFAULT_NAMES,
) -> Tensor:
    """The size bucket of every pair, (P,) long indices into ``names``.

    Bucket ``k`` holds the pairs whose box share ``box_area / image_area`` lies in
    ``[edges[k-1], edges[k])``: the lower edge belongs to the bucket, the upper one to the next
    (bigger) bucket. With the defaults: ``small`` below 1 %, ``medium`` from 1 % (included) to
    10 % (excluded), ``large`` from 10 % (included). A share exactly on an edge therefore goes to
    the bigger bucket: a 10x10 box in a 100x100 image (1 %) is ``medium``.

    The float64 comparison ``box_area / image_area >= edge`` decides as the exact one for any
    edge written with few digits: division rounds correctly and monotonically, so a share equal
    to the edge's decimal rounds to the same double as the edge, and a share below it could only
    round up to it if its distance to the edge, at least ``1 / (image_area * q)`` for an edge
    ``p / q``, were under half a unit in the last place (about ``1e-18`` at 1 %).

    Args:
        records: the scored pairs (``box_area`` and ``image_area`` are read).
        edges: the increasing, positive bucket edges, shares of the image (0.01 = 1 %).
        names: one name per bucket, ``len(edges) + 1`` of them.

    Returns:
        (P,) long, the bucket index of each pair.
    """
    return share_buckets(records.box_share, edges, names)


def share_buckets(
    share: Tensor, edges: Sequence[float] = DEFAULT_EDGES, names: Sequence[str] = DEFAULT_NAMES
) -> Tensor:
    """The bucket index of each box share (box area / image area), (P,) long, by the rule of
    :func:`size_buckets`."""
    edges = _check_buckets(edges, names)
    share = torch.as_tensor(share, dtype=torch.float64)
    bucket = torch.zeros(share.shape, dtype=torch.long)
    for edge in edges:
        bucket += (share >= edge).long()
    return bucket


def by_size(
    records: PairRecords,
    num_classes: int,
    edges: Sequence[float] = DEFAULT_EDGES,
    names: Sequence[str] = DEFAULT_NAMES,
) -> dict[str, dict[str, object]]:
    """A metric reduced per size bucket.

    Args:
        records: the scored pairs of one metric.
        num_classes: classes of the maps.
        edges, names: the buckets (see ``size_buckets``).

    Returns:
        ``{name: reduce_records(pairs of that bucket, num_classes)}`` for every bucket in the
        order of ``names`` (a bucket without pairs has NaN means and ``n`` 0): per class, pooled
        over pairs and macro over classes with pairs.
    """
    bucket = size_buckets(records, edges, names)
    return {
        name: reduce_records(records.select(bucket == k), num_classes)
        for k, name in enumerate(names)
    }


def records_from_pair_scores(
    scores: PairScores,
    image_size: tuple[int, int],
    *,
    value: str = "point",
    threshold: float | None = None,
    image_offset: int = 0,
) -> PairRecords:
    """The paper's metric pairs (``score_pairs`` output) as benchmark ``PairRecords``.

    Args:
        scores: the per-pair statistics of one batch (``pylon.metrics.pairs.score_pairs``).
        image_size: (H, W) of the network input the boxes and maps were scored in; every pair's
            ``image_area`` is ``H * W`` and its ``box_area`` the pixels of the union of its boxes
            clipped to the image (``PairScores.gt_area``).
        value: ``"point"`` (1.0 for a point hit, else 0.0), ``"iobb"`` or ``"iou"``.
        threshold: for ``"iobb"`` / ``"iou"``: with a threshold ``t`` the value is the paper's hit
            ``ratio > t`` (1.0 / 0.0; an empty mask is a miss, 0.0, as the paper's accumulator
            counts it); without one the ratio itself (NaN for an empty mask: undefined).
        image_offset: added to the batch's image indices (the images of the batches before it),
            so that the records of several batches can be concatenated.

    Returns:
        ``PairRecords`` in the order of ``scores``; reduced with ``reduce_records``, a hit metric
        gives the ``LocalizationAccumulator``'s ``_weighted`` (pooled) and ``_macro`` figures.
    """
    height, width = as_image_size(image_size)
    if value == "point":
        if threshold is not None:
            raise ValueError("the point metric takes no threshold")
        values = scores.point_hit.double()
    elif value in ("iobb", "iou"):
        ratio = scores.iobb if value == "iobb" else scores.iou
        if threshold is None:
            values = ratio.double()
        else:
            if not 0 <= threshold < 1:
                raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
            values = (ratio > threshold).double()
    else:
        raise ValueError(f"value must be 'point', 'iobb' or 'iou', got {value!r}")
    n = len(scores)
    return PairRecords(
        image_index=scores.image_index.long() + int(image_offset),
        class_index=scores.class_index.long(),
        value=values,
        box_area=scores.gt_area.long(),
        image_area=torch.full((n,), height * width, dtype=torch.long),
    )
