"""What ``Predictor`` returns per image: probabilities, peaks in original pixels, heatmaps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor


def input_to_original(coord: Tensor, input_size: int, original_size: int) -> Tensor:
    """Map pixel indices of the square network input back to the original axis.

    The input was resized from ``original_size`` to ``input_size`` pixels with pixel centres
    aligned (OpenCV / ``align_corners=False``): centre ``i`` of the input lies at
    ``(i + 0.5) * original / input - 0.5`` in the original, rounded to the nearest pixel.
    """
    scaled = (coord.double() + 0.5) * (original_size / input_size) - 0.5
    return scaled.round().clamp(0, original_size - 1).long()


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


def peaks_in_input(cams: Tensor, input_size: int) -> tuple[Tensor, Tensor]:
    """Arg-max ``(row, col)`` per image and class of ``sigmoid(cams)`` up-sampled bilinearly
    (``align_corners=False``) to the square input, exactly as point localization scores it."""
    maps = F.interpolate(
        cams.float().sigmoid(), size=(input_size, input_size), mode="bilinear", align_corners=False
    )
    flat = maps.flatten(2).argmax(dim=2)
    return flat // input_size, flat % input_size


def peaks_in_original(
    cams: Tensor, input_size: int, original_sizes: list[tuple[int, int]]
) -> list[list[tuple[int, int]]]:
    """Per image, per class ``(x, y)`` of the heatmap peak in that image's original pixels."""
    rows, cols = peaks_in_input(cams, input_size)
    out = []
    for i, (height, width) in enumerate(original_sizes):
        ys = input_to_original(rows[i], input_size, height)
        xs = input_to_original(cols[i], input_size, width)
        out.append([(int(x), int(y)) for x, y in zip(xs, ys, strict=True)])
    return out
