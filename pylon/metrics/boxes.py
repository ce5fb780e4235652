"""Ground-truth boxes for the localization metrics: validated, flattened, and their pixel extents.

Boxes come as one list per image of ``(x, y, w, h, class_index)`` in input pixels. A box covers
the pixel rows ``int(y) .. int(y)+int(h)-1`` and columns ``int(x) .. int(x)+int(w)-1`` (each of
x, y, w, h truncated to an integer first), clipped to the image.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class BoxTable:
    """All boxes of a batch, one row each: ``image`` and ``cls`` (B,) long, ``xywh`` (B, 4)
    float64, in the order given (image by image)."""

    image: Tensor
    cls: Tensor
    xywh: Tensor

    def __len__(self) -> int:
        return len(self.image)


def _fast_table(boxes, num_classes: int) -> BoxTable | None:
    """All boxes at once through numpy; None when anything is off (the loop then names it)."""
    counts = [len(image_boxes) for image_boxes in boxes]
    flat = [box for image_boxes in boxes for box in image_boxes]
    if not flat:
        return None
    try:
        array = np.asarray(flat)
    except (TypeError, ValueError):  # ragged
        return None
    if array.dtype.kind not in "biuf" or array.shape != (len(flat), 5):
        return None
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        return None
    cls = array[:, 4]
    if (array[:, 2:4] < 0).any() or (cls != np.round(cls)).any():
        return None
    if (cls < 0).any() or (cls >= num_classes).any():
        return None
    images = np.repeat(np.arange(len(boxes)), counts)
    return BoxTable(
        torch.from_numpy(images).long(),
        torch.from_numpy(cls).long(),
        torch.from_numpy(array[:, :4].copy()),
    )


def _checked_table(boxes, num_classes: int) -> BoxTable:
    """Box by box, naming the first bad one."""
    images, classes, coords = [], [], []
    for i, image_boxes in enumerate(boxes):
        for j, box in enumerate(image_boxes):
            where = f"boxes[{i}][{j}]"
            if len(box) != 5:
                raise ValueError(f"{where} must be (x, y, w, h, class_index), got {box!r}")
            *xywh, cls = (b.item() if isinstance(b, (Tensor, np.generic)) else b for b in box)
            if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in xywh):
                raise ValueError(f"{where}: x, y, w, h must be finite numbers, got {box!r}")
            if xywh[2] < 0 or xywh[3] < 0:
                raise ValueError(f"{where}: width and height must be >= 0, got {box!r}")
            if isinstance(cls, float) and cls.is_integer():
                cls = int(cls)
            if not isinstance(cls, numbers.Integral) or not 0 <= cls < num_classes:
                raise ValueError(
                    f"{where}: class_index must be an integer in [0, {num_classes}), got {cls!r}"
                )
            images.append(i)
            classes.append(int(cls))
            coords.append([float(v) for v in xywh])
    return BoxTable(
        torch.tensor(images, dtype=torch.long),
        torch.tensor(classes, dtype=torch.long),
        torch.tensor(coords, dtype=torch.float64).reshape(-1, 4),
    )


def box_table(
    boxes: Sequence[Sequence], num_images: int, num_classes: int, image_size: tuple[int, int]
) -> BoxTable:
    """Validate ``boxes`` (one list per image of ``(x, y, w, h, class_index)``) and flatten them.

    Args:
        boxes: ``num_images`` lists of boxes in input pixels.
        num_images: images in the batch.
        num_classes: classes of the maps (``class_index`` must lie in ``[0, num_classes)``).
        image_size: (H, W) of the input.

    Returns:
        A ``BoxTable``. Raises ``ValueError`` naming the box (``boxes[i][j]``) when one is not
        five numbers, has a negative size or an unknown class, or lies entirely outside the image
        (the rectangle ``[x, x+w] x [y, y+h]`` does not meet ``[0, W) x [0, H)``): such a box can
        never be hit and says the boxes were scaled to another size.
    """
    if len(boxes) != num_images:
        raise ValueError(f"boxes has {len(boxes)} entries but cams has {num_images} images")
    table = _fast_table(boxes, num_classes)
    if table is None:
        table = _checked_table(boxes, num_classes)
    height, width = image_size
    x, y, w, h = table.xywh.unbind(1)
    outside = (x >= width) | (y >= height) | (x + w < 0) | (y + h < 0)
    if bool(outside.any()):
        k = int(outside.nonzero()[0, 0])
        i = int(table.image[k])
        j = k - int((table.image < i).sum())
        raise ValueError(
            f"boxes[{i}][{j}] (image {i}, class {int(table.cls[k])}): box "
            f"{tuple(boxes[i][j])!r} lies entirely outside the {height}x{width} image; boxes "
            "must be (x, y, w, h, class_index) in the pixels of the network input"
        )
    return table


def pixel_extents(xywh: Tensor, image_size: tuple[int, int]) -> Tensor:
    """Half-open pixel extents ``(row0, row1, col0, col1)`` (B, 4) long of boxes ``xywh`` (B, 4).

    Rows ``int(y) .. int(y)+int(h)-1`` and columns ``int(x) .. int(x)+int(w)-1``, clipped to the
    image of size ``image_size`` (H, W); an empty extent has ``row1 <= row0`` or ``col1 <= col0``.
    """
    height, width = image_size
    x, y, w, h = xywh.trunc().long().unbind(1)  # int(): truncation towards zero
    return torch.stack(
        [y.clamp(0, height), (y + h).clamp(0, height), x.clamp(0, width), (x + w).clamp(0, width)],
        dim=1,
    )
