"""Bilinear up-sampling (align_corners=False) evaluated cell by cell, never at full resolution.

Output row ``r`` reads source rows ``i0[r]`` and ``i0[r] + 1`` (the last row repeated past the
border); the rows with the same ``i0`` form a row group, likewise for columns. A cell (row group x
column group) lies between the min and max of its four source corners, the 2x2 window at
``(i0, j0)`` of the edge-padded map; a block of BLOCK x BLOCK cells between the min and max of
its (BLOCK + 1)^2 source pixels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

BLOCK = 8  # groups per block side: blocks are classified first, cells only inside undecided ones


@dataclass(frozen=True)
class AxisPlan:
    """How one axis of ``in_size`` source pixels maps to output pixels.

    Group ``i`` (one per source pixel; empty when down-sampling skips it, and past ``in_size``
    up to a whole number of blocks) holds the output pixels ``start[i] <= d < start[i] +
    size[i]``, valued ``src[i] + lam[d] * (src[i + 1] - src[i])``.
    """

    start: Tensor  # (G,) long
    size: Tensor  # (G,) long
    lam: Tensor  # (out_size,) float64, the weight torch gives the second source pixel
    max_size: int

    def block_groups(self) -> tuple[Tensor, Tensor]:
        """(start, size) of each block of ``BLOCK`` consecutive groups."""
        return self.start[::BLOCK], self.size.view(-1, BLOCK).sum(dim=1)


@functools.lru_cache(maxsize=32)
def axis_plan(in_size: int, out_size: int, device: torch.device, dim: int = -1) -> AxisPlan:
    """The groups of one axis, with the weights torch's own kernel uses on ``device``.

    Torch computes ``src = max((d + 0.5) * in / out - 0.5, 0)`` in float32, fused or not
    depending on the build and device; interpolating one-hot rows reads its weights back exactly.
    """
    eye = torch.eye(in_size, device=device)
    shape, size = (in_size, 1, 1, in_size), (1, out_size)
    if dim == -2:
        shape, size = (in_size, 1, in_size, 1), (out_size, 1)
    weights = F.interpolate(eye.reshape(shape), size=size, mode="bilinear", align_corners=False)
    weights = weights.reshape(in_size, out_size).cpu()
    i0 = (weights > 0).byte().argmax(dim=0)
    # Past the last source pixel both corners are the same pixel: any weight gives its value.
    i1 = (i0 + 1).clamp(max=in_size - 1)
    lam = torch.where(i1 > i0, weights[i1, torch.arange(out_size)].double(), 0.0)
    counts = torch.bincount(i0, minlength=-(-in_size // BLOCK) * BLOCK)
    start = torch.cumsum(counts, 0) - counts
    tensors = (t.to(device) for t in (start, counts, lam))
    return AxisPlan(*tensors, int(counts.max()))


def pad_edges(maps: Tensor, rows: AxisPlan, cols: AxisPlan) -> Tensor:
    """(P, h, w) -> (P, Gy + 1, Gx + 1), the last row and column repeated."""
    pad_y, pad_x = len(rows.size) + 1 - maps.shape[1], len(cols.size) + 1 - maps.shape[2]
    return F.pad(maps[:, None], (0, pad_x, 0, pad_y), mode="replicate")[:, 0]


def block_bounds(padded: Tensor) -> tuple[Tensor, Tensor]:
    """Min and max over each block's (BLOCK + 1)^2 source pixels: (P, Hb, Wb) each."""
    num, height, width = padded.shape
    blocks_y, blocks_x = (height - 1) // BLOCK, (width - 1) // BLOCK
    bounds = []
    for reduce, pairwise in ((torch.amin, torch.minimum), (torch.amax, torch.maximum)):
        rows = reduce(padded[:, :-1].reshape(num, blocks_y, BLOCK, width), dim=2)
        rows = pairwise(rows, padded[:, BLOCK::BLOCK])
        cells = reduce(rows[:, :, :-1].reshape(num, blocks_y, blocks_x, BLOCK), dim=3)
        bounds.append(pairwise(cells, rows[:, :, BLOCK::BLOCK]))
    return bounds[0], bounds[1]


def cell_bounds(
    padded: Tensor, rows: AxisPlan, cols: AxisPlan, pair: Tensor, by: Tensor, bx: Tensor
) -> tuple[Tensor, Tensor]:
    """Min and max of the four source corners of every cell of K blocks: (K, BLOCK, BLOCK).

    Empty cells get min NaN and max -inf: no comparison against a threshold selects them.
    """
    offset = torch.arange(BLOCK + 1, device=padded.device)
    gy, gx = by[:, None] * BLOCK + offset, bx[:, None] * BLOCK + offset
    window = padded[pair[:, None, None], gy[:, :, None], gx[:, None, :]]
    row_min = torch.minimum(window[:, :-1], window[:, 1:])
    row_max = torch.maximum(window[:, :-1], window[:, 1:])
    cell_min = torch.minimum(row_min[:, :, :-1], row_min[:, :, 1:])
    cell_max = torch.maximum(row_max[:, :, :-1], row_max[:, :, 1:])
    empty = (rows.size[gy[:, :-1]] == 0)[:, :, None] | (cols.size[gx[:, :-1]] == 0)[:, None, :]
    return cell_min.masked_fill_(empty, torch.nan), cell_max.masked_fill_(empty, -torch.inf)


def group_overlap(start: Tensor, size: Tensor, edges: Tensor) -> Tensor:
    """Pixels shared by each group and each segment ``[edges[s], edges[s+1])``: (P, G, S)."""
    first = start[None, :, None]
    last = first + size[None, :, None]
    lo = torch.maximum(first, edges[:, None, :-1])
    hi = torch.minimum(last, edges[:, None, 1:])
    return (hi - lo).clamp(min=0)


@dataclass
class CellPixels:
    """The values of K cells' pixels, padded to the largest group: (K, Ry, Rx)."""

    values: Tensor  # float64
    rows: Tensor  # (K, Ry) output row of each padded row (clamped inside the image)
    cols: Tensor  # (K, Rx)
    valid: Tensor  # (K, Ry, Rx) bool, False on padding


def cell_pixels(
    padded: Tensor, rows: AxisPlan, cols: AxisPlan, pair: Tensor, gy: Tensor, gx: Tensor
) -> CellPixels:
    """Evaluate cells (``pair``, ``gy``, ``gx``) of ``padded`` (P, h + 1, w + 1) in float64.

    The value is ``top + lam_y * (bottom - top)`` with ``top``/``bottom`` interpolated along x the
    same way: exact on plateaus, never outside the range of the four corners.
    """

    def axis(plan: AxisPlan, group: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        offset = torch.arange(plan.max_size, device=group.device)
        index = plan.start[group, None] + offset
        valid = offset < plan.size[group, None]
        index = index.clamp(max=len(plan.lam) - 1)
        return index, valid, plan.lam[index]

    row, row_valid, lam_y = axis(rows, gy)
    col, col_valid, lam_x = axis(cols, gx)
    stride = padded.shape[2]
    base = (pair * padded.shape[1] + gy) * stride + gx
    flat = padded.reshape(-1)
    a, b, c, d = (flat[base + k].double()[:, None] for k in (0, 1, stride, stride + 1))
    top = a + lam_x * (b - a)
    bottom = c + lam_x * (d - c)
    values = top[:, None, :] + lam_y[:, :, None] * (bottom - top)[:, None, :]
    valid = row_valid[:, :, None] & col_valid[:, None, :]
    return CellPixels(values, row, col, valid)
