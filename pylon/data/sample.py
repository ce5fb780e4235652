"""The sample every dataset yields, and the collate function that batches boxes as lists."""

from __future__ import annotations

from typing import Any, TypedDict

import torch
from torch import Tensor

# One box: x, y, w, h in the transformed image's pixels, then the class index.
Box = tuple[float, float, float, float, int]


class Sample(TypedDict):
    image: Tensor  # (in_channels, H, W) float, normalised
    labels: Tensor  # (num_classes,) float multi-hot
    boxes: list[Box]  # empty when the dataset has none
    image_id: str


def collate(samples: list[Sample]) -> dict[str, Any]:
    """Stack images and labels; keep boxes and ids as per-image lists."""
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "labels": torch.stack([s["labels"] for s in samples]),
        "boxes": [list(s["boxes"]) for s in samples],
        "image_id": [s["image_id"] for s in samples],
    }
