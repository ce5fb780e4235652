"""Pooling of a class activation map into image-level logits: global max, global average and
Li et al.'s multiple-instance (MIL) pooling."""

from __future__ import annotations

import math

import torch
from torch import Tensor

POOLS = ("max", "avg", "mil")


def global_max_pool(cam: Tensor) -> Tensor:
    """Global max pooling.

    Args:
        cam: ``(N, C, h, w)`` class maps.

    Returns:
        ``(N, C)``: the maximum score of each map.
    """
    return cam.amax(dim=(2, 3))


def global_avg_pool(cam: Tensor) -> Tensor:
    """Global average pooling.

    Args:
        cam: ``(N, C, h, w)`` class maps.

    Returns:
        ``(N, C)``: the mean score of each map. For a map made by a 1x1 convolution this equals
        the convolution of the average-pooled feature, which is how the reference computes its
        average-pooling CAM baseline.
    """
    return cam.mean(dim=(2, 3))


def mil_logit(scores: Tensor, floor: float = 0.98) -> Tensor:
    """Li et al. 2018 multiple-instance pooling, returned as a logit.

    Args:
        scores: ``(N, C, h, w)`` patch scores (logits).
        floor: the lower bound of each patch's "not present" factor (0.98 in the paper).

    Returns:
        ``(N, C)`` float32 logits ``log(p / (1 - p))`` of
        ``p = 1 - prod_i((1 - floor) * (1 - sigmoid(s_i)) + floor)``, computed in log space so
        that they stay finite.
    """
    scores = scores.float()
    # each factor is 1 - (1 - floor) * sigmoid(s) in [floor, 1]
    log_not_p = torch.log1p(-(1.0 - floor) * torch.sigmoid(scores)).sum(dim=(2, 3))
    # log_not_p == 0 only if every sigmoid underflowed; keep the logit finite there
    log_not_p = log_not_p.clamp(max=-torch.finfo(log_not_p.dtype).tiny)
    log_p = _log1mexp(log_not_p)
    return log_p - log_not_p


def pool_class_map(cam: Tensor, pool: str, *, mil_floor: float = 0.98) -> Tensor:
    """Pool ``cam`` ``(N, C, h, w)`` into ``(N, C)`` logits.

    Args:
        cam: the raw class map.
        pool: ``"max"`` (:func:`global_max_pool`), ``"avg"`` (:func:`global_avg_pool`) or
            ``"mil"`` (:func:`mil_logit`).
        mil_floor: ``floor`` of the MIL pooling.

    Returns:
        The image-level logits.
    """
    if pool == "max":
        return global_max_pool(cam)
    if pool == "avg":
        return global_avg_pool(cam)
    if pool == "mil":
        return mil_logit(cam, mil_floor)
    raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")


def _log1mexp(a: Tensor) -> Tensor:
    """``log(1 - exp(a))`` for ``a < 0`` without cancellation (Maechler 2012)."""
    return torch.where(a > -math.log(2.0), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))
