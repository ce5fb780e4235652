"""Per-pair statistics of the localization metrics: peak, point hit and mask / box pixel counts.

For every (image, class) pair with at least one box of that class, the map's up-sampled
probabilities (``pylon.metrics.peaks``) give the peak pixel (row, col), a point hit when it lies
in any of the boxes (``x <= col <= x + w and y <= row <= y + h``), the mask (map / peak ``> 0.5``)
and its pixel counts against the union of the boxes (``pylon.metrics.boxes`` for their pixels).
The accumulator (``pylon.metrics.localization``) adds these statistics up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pylon.metrics.boxes import box_table, pixel_extents
from pylon.metrics.peaks import (
    as_image_size,
    check_maps,
    chunk_pairs,
    first_peaks,
    full_precision,
    upsample,
)

# Up-sampled map, ground-truth mask and a temporary, float32 each.
_BYTES_PER_PIXEL = 12


@dataclass
class PairScores:
    """Statistics of each scored (image, class) pair of one batch, CPU tensors of shape (P,).

    ``image_index`` indexes into that batch; ``peak_row``/``peak_col`` are the arg-max of the
    up-sampled map in input pixels; ``mask_area`` counts the mask's pixels, ``gt_area`` those of
    the union of the pair's boxes, ``intersection`` those in both.
    """

    image_index: Tensor  # long
    class_index: Tensor  # long
    peak_row: Tensor  # long
    peak_col: Tensor  # long
    point_hit: Tensor  # bool
    mask_area: Tensor  # long
    intersection: Tensor  # long
    gt_area: Tensor  # long

    def __len__(self) -> int:
        return len(self.image_index)

    @property
    def union(self) -> Tensor:
        """Pixels in the mask or the boxes, (P,) long."""
        return self.mask_area + self.gt_area - self.intersection

    @property
    def iobb(self) -> Tensor:
        """``|mask & gt| / |mask|``, (P,) float64, NaN for an empty mask."""
        return _ratio(self.intersection, self.mask_area)

    @property
    def iou(self) -> Tensor:
        """``|mask & gt| / |mask | gt|``, (P,) float64, NaN when both are empty."""
        return _ratio(self.intersection, self.union)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    num, den = num.double(), den.double()
    return torch.where(den > 0, num / den.clamp(min=1), torch.full_like(num, math.nan))


def as_cams(cams, num_classes: int | None = None) -> Tensor:
    """``cams`` as a detached floating-point tensor (N, C, h, w); numpy arrays are accepted.

    Raises ``ValueError`` unless ``cams`` is a 4-d floating-point array with ``num_classes``
    maps per image (any number when ``None``)."""
    if isinstance(cams, np.ndarray):
        cams = torch.from_numpy(cams)
    if not isinstance(cams, Tensor):
        raise ValueError(f"cams must be a torch.Tensor or numpy array, got {type(cams).__name__}")
    if cams.ndim != 4:
        raise ValueError(f"cams must have shape (N, C, h, w), got {tuple(cams.shape)}")
    if num_classes is not None and cams.shape[1] != num_classes:
        raise ValueError(f"cams have {cams.shape[1]} classes, expected {num_classes}")
    if not cams.is_floating_point():
        raise ValueError(f"cams must be floating point, got {cams.dtype}")
    return cams.detach()


def half_peak_threshold(peak: Tensor) -> Tensor:
    """The float32 ``c`` with ``(v / peak > 0.5) == (v > c)`` for every float32 ``v``.

    IEEE division rounds to nearest, ties to even; the float32 after 0.5 is ``0.5 + 2**-24``, so
    ``fl(v / peak) > 0.5`` exactly when ``v / peak > 0.5 + 2**-25``, i.e. ``v > t`` with
    ``t = peak * (0.5 + 2**-25)`` (exact in float64), i.e. ``v > c`` with ``c`` the largest
    float32 not above ``t``: ``peak / 2`` itself unless that rounds (subnormal peaks). One
    comparison instead of a division and a comparison per pixel. For
    ``peak == 0`` (an all-zero map, whose scaled values are NaN) ``c`` is 0 and no value of a
    non-negative map exceeds it: the mask is empty, as with the division.
    """
    exact = peak.double() * (0.5 + 2.0**-25)
    c = exact.float()
    above = c.double() > exact
    return torch.where(above, torch.nextafter(c, torch.full_like(c, -math.inf)), c)


def score_pairs(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    apply_sigmoid: bool = True,
    chunk_bytes: int | None = None,
) -> PairScores:
    """Statistics of every (image, class) pair that has at least one box.

    Args:
        cams: raw class maps (N, C, h, w), torch (any device: the chunks run there) or numpy;
            probabilities in [0, 1] with ``apply_sigmoid=False``.
        boxes: N lists of ``(x, y, w, h, class_index)`` in input pixels.
        image_size: (H, W) of the network input.
        apply_sigmoid: apply ``sigmoid`` (float32) to ``cams`` first.
        chunk_bytes: memory for one chunk of up-sampled maps (default 8 MiB on the CPU, 512 MiB
            on a GPU); only one chunk is at full resolution at a time.

    Returns:
        ``PairScores`` on the CPU, pairs ordered by image then class. Raises ``ValueError`` for bad
        boxes (``pylon.metrics.boxes.box_table``) or a scored map with NaN or infinity (maps of
        pairs without boxes are not read).
    """
    cams = as_cams(cams)
    size = as_image_size(image_size)
    num_images, num_classes = cams.shape[:2]
    table = box_table(boxes, num_images, num_classes, size)
    keys, box_pair = torch.unique(table.image * num_classes + table.cls, return_inverse=True)
    order = torch.argsort(box_pair, stable=True)
    box_pair, xywh = box_pair[order], table.xywh[order]
    extents = pixel_extents(xywh, size)
    first_of_pair = torch.searchsorted(box_pair, torch.arange(len(keys) + 1))
    slot = torch.arange(len(box_pair)) - first_of_pair[box_pair]

    device = cams.device
    flat = cams.flatten(0, 1)
    step = chunk_pairs(size, device, _BYTES_PER_PIXEL, chunk_bytes)
    parts = []
    with torch.no_grad(), full_precision(device):
        for start in range(0, len(keys), step):
            stop = min(start + step, len(keys))
            maps = flat.index_select(0, keys[start:stop].to(device))
            check_maps(maps, apply_sigmoid, _pair_name(keys[start:stop], num_classes))
            first, last = int(first_of_pair[start]), int(first_of_pair[stop])
            parts.append(
                _score_chunk(
                    upsample(maps, size, apply_sigmoid),
                    (box_pair[first:last] - start).to(device),
                    slot[first:last].to(device),
                    extents[first:last].to(device),
                )
            )
    if parts:
        rows, cols, mask_area, intersection, gt_area = (
            torch.cat(t) for t in zip(*parts, strict=True)
        )
    else:
        rows = cols = mask_area = intersection = gt_area = torch.zeros(0, dtype=torch.long)

    # Point hits on the CPU in float64 (the box coordinates as given, as Python compares them).
    col, row = cols[box_pair].double(), rows[box_pair].double()
    x, y, w, h = xywh.unbind(1)
    inside = (x <= col) & (col <= x + w) & (y <= row) & (row <= y + h)
    point_hit = torch.zeros(len(keys), dtype=torch.long).index_add_(0, box_pair, inside.long()) > 0
    return PairScores(
        keys // num_classes,
        keys % num_classes,
        rows,
        cols,
        point_hit,
        mask_area,
        intersection,
        gt_area,
    )


def union_masks(
    pair: Tensor, slot: Tensor, extents: Tensor, num: int, size: tuple[int, int], device
) -> Tensor:
    """The union of each map's boxes, (num, H, W) float32 0/1.

    Box ``b`` (``extents[b]`` = row0, row1, col0, col1, end-exclusive) belongs to map ``pair[b]``
    as its ``slot[b]``-th box. The union is (rows in its k-th box) x (columns in it), summed over
    k and clipped to 1 (small integers: exact in float32); most maps have one box: a single outer
    product.
    """
    height, width = size
    slots = int(slot.max()) + 1 if len(slot) else 1
    r = torch.arange(height, device=device)
    c = torch.arange(width, device=device)
    in_rows = torch.zeros(num, slots, height, device=device)
    in_cols = torch.zeros(num, slots, width, device=device)
    in_rows[pair, slot] = ((r >= extents[:, :1]) & (r < extents[:, 1:2])).float()
    in_cols[pair, slot] = ((c >= extents[:, 2:3]) & (c < extents[:, 3:4])).float()
    gt = in_rows[:, 0, :, None] * in_cols[:, 0, None, :]
    for k in range(1, slots):
        gt.addcmul_(in_rows[:, k, :, None], in_cols[:, k, None, :])
    if slots > 1:
        gt.clamp_(max=1)
    return gt


def _score_chunk(up: Tensor, pair: Tensor, slot: Tensor, extents: Tensor):
    """Peak and pixel counts of maps ``up`` (P, H, W); box ``b`` (``extents[b]`` = row0, row1,
    col0, col1) belongs to map ``pair[b]``, as its ``slot[b]``-th box. ``up`` is overwritten."""
    num, height, width = up.shape
    rows, cols, peak = first_peaks(up)
    # Pixel counts are exact in float32 up to 2**24 pixels per map.
    count_dtype = torch.float32 if height * width <= 2**24 else torch.float64
    up.gt_(half_peak_threshold(peak)[:, None, None])  # the mask, as 0.0 / 1.0
    mask_area = up.sum(dim=(1, 2), dtype=count_dtype)

    gt = union_masks(pair, slot, extents, num, (height, width), up.device)
    gt_area = gt.sum(dim=(1, 2), dtype=count_dtype)
    intersection = gt.mul_(up).sum(dim=(1, 2), dtype=count_dtype)
    return tuple(t.long().cpu() for t in (rows, cols, mask_area, intersection, gt_area))


def _pair_name(keys: Tensor, num_classes: int):
    return lambda k: f"cams[{int(keys[k]) // num_classes}, {int(keys[k]) % num_classes}]"
