"""Pooling of a class activation map into image-level logits: global max and Li et al.'s MIL."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def global_max_pool(cam: Tensor) -> Tensor:
    """``(N, C, h, w) -> (N, C)``: the maximum score of each class map."""
    return cam.amax(dim=(2, 3))


def mil_logit(scores: Tensor, floor: float = 0.98) -> Tensor:
    """Li et al. 2018 multiple-instance pooling, returned as a logit.

    ``p = 1 - prod_i((1 - floor) * (1 - sigmoid(s_i)) + floor)`` over the patches of each class map,
    computed in log space (float32) so that ``log(p / (1 - p))`` stays finite.
    """
    scores = scores.float()
    # each factor is 1 - (1 - floor) * sigmoid(s) in [floor, 1]
    log_not_p = torch.log1p(-(1.0 - floor) * torch.sigmoid(scores)).sum(dim=(2, 3))
    # log_not_p == 0 only if every sigmoid underflowed; keep the logit finite there
    log_not_p = log_not_p.clamp(max=-torch.finfo(log_not_p.dtype).tiny)
    log_p = _log1mexp(log_not_p)
    return log_p - log_not_p


def _log1mexp(a: Tensor) -> Tensor:
    """``log(1 - exp(a))`` for ``a < 0`` without cancellation (Maechler 2012)."""
    return torch.where(a > -math.log(2.0), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))
