"""The one output type every model returns: image-level logits and the class activation map."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class ModelOutput(NamedTuple):
    """``logits`` is ``(N, C)``; ``cam`` is ``(N, C, h, w)`` raw scores (show ``cam.sigmoid()``)."""

    logits: Tensor
    cam: Tensor
