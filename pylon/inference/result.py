"""What ``Predictor`` returns per image: probabilities, peaks in original pixels, heatmaps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor

# The one network-to-original mapping and peak finder (re-exported for Predictor).
from pylon.evaluation.coordinates import input_to_original, peaks_in_original  # noqa: F401


@dataclass
class Prediction:
    """One image's results. ``peaks[c] = (x, y)`` is where class ``c``'s heatmap peaks, in the
    original image's pixels; ``selected`` are the classes above the threshold (or those chosen)."""

    image_id: str
    path: str | None
    original_size: tuple[int, int]  # (height, width)
    probabilities: dict[str, float]
    peaks: dict[str, tuple[int, int]]
    selected: list[str]
    cam: Tensor = field(repr=False)  # (C, h, w) raw scores at the network's resolution
    pixels: np.ndarray | None = field(default=None, repr=False)  # original uint8 image if kept

    @property
    def class_names(self) -> list[str]:
        return list(self.probabilities)

    def heatmap(self, class_name: str) -> np.ndarray:
        """``sigmoid(CAM)`` of ``class_name`` up-sampled (bilinear) to the original image size,
        float32 ``(H, W)`` in [0, 1]."""
        if class_name not in self.probabilities:
            raise ValueError(
                f"unknown class {class_name!r}; expected one of {', '.join(self.class_names)}"
            )
        index = self.class_names.index(class_name)
        cam = self.cam[index][None, None].float().sigmoid()
        up = F.interpolate(cam, size=self.original_size, mode="bilinear", align_corners=False)
        return up[0, 0].numpy()

    def heatmaps(self, classes: list[str] | None = None) -> dict[str, np.ndarray]:
        """:meth:`heatmap` of each of ``classes`` (default: the ``selected`` ones)."""
        return {c: self.heatmap(c) for c in (self.selected if classes is None else classes)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (no arrays)."""
        height, width = self.original_size
        return {
            "image_id": self.image_id,
            "path": self.path,
            "height": height,
            "width": width,
            "probabilities": self.probabilities,
            "peaks": {c: list(p) for c, p in self.peaks.items()},
            "selected": self.selected,
        }


@dataclass
class Failure:
    """An input that could not be read or predicted, and why."""

    image_id: str
    path: str | None
    reason: str
