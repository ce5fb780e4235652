"""Prior-probability initialisation of a model's class-map head (RetinaNet's "prior" init).

With a default-initialised head every location of a fresh class map scores about 0.5, so the
max-pooled logit of every image starts near "present". Trained from scratch with image-level labels,
the negatives (most images, full of other classes' findings) then teach each map to be *lowest on
findings*, and its peak ends up beside the finding rather than on it. Starting every location at
a small probability ``prior`` lets the positives pull the peak onto the finding. An opt-in applied
on top of the model's own (reference) initialisation: the trainer's ``model.head_prior``.
"""

from __future__ import annotations

import math

from torch import nn


def class_head(model: nn.Module) -> nn.Conv2d:
    """Return the convolution that outputs ``model``'s class map.

    Args:
        model: a model with a ``class_head`` (every :class:`~pylon.models.base.ClassMapModel`).

    Returns:
        The ``nn.Conv2d``; ``ValueError`` when the model has none.
    """
    head = getattr(model, "class_head", None)
    if not isinstance(head, nn.Conv2d):
        raise ValueError(
            f"{type(model).__name__} has no 'class_head' convolution (the layer that outputs "
            "the class map); prior init needs one"
        )
    return head


def init_head_prior(model: nn.Module, prior: float = 0.01, weight_std: float = 0.001) -> None:
    """Make every location of every class map of ``model`` start at probability ``prior``.

    Args:
        model: the model; its ``class_head`` is changed in place.
        prior: the starting probability, in (0, 1): bias ``-log((1 - prior) / prior)``.
        weight_std: the head's weights are drawn from N(0, ``weight_std``).

    Returns:
        None.
    """
    if not 0.0 < prior < 1.0:
        raise ValueError(f"head prior must be a probability in (0, 1), got {prior}")
    if weight_std < 0:
        raise ValueError(f"head weight_std must be >= 0, got {weight_std}")
    head = class_head(model)
    if head.bias is None:
        raise ValueError(f"{type(model).__name__}'s class head has no bias to set the prior with")
    nn.init.normal_(head.weight, std=weight_std)
    nn.init.constant_(head.bias, -math.log((1.0 - prior) / prior))
