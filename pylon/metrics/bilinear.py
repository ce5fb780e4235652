"""Bilinear up-sampling (align_corners=False) evaluated cell by cell, never at full resolution.

Output rows that read the same two source rows form a row group, likewise for columns; a cell
(row group x column group) holds values between the min and max of its four source corners.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AxisPlan:
    """How one axis of ``in_size`` source pixels maps to ``out_size`` output pixels.

    Output pixel ``d`` of group ``g`` (``start[g] <= d < start[g] + size[g]``) is
    ``src[i0[g]] + lam[d] * (src[i1[g]] - src[i0[g]])``, with torch's float32 ``lam``.
    """

    i0: Tensor  # (G,) long
    i1: Tensor  # (G,) long
    start: Tensor  # (G,) long
    size: Tensor  # (G,) long
    lam: Tensor  # (out_size,) float64
    max_size: int

    def __len__(self) -> int:
        return len(self.i0)


@functools.lru_cache(maxsize=32)
def axis_plan(in_size: int, out_size: int, device: torch.device, dim: int = -1) -> AxisPlan:
    """The groups of one axis, with the weights torch's own kernel uses on ``device``.

    Torch computes ``src = max((d + 0.5) * in / out - 0.5, 0)`` in float32, fused or not
    depending on the build and device; interpolating one-hot rows reads its weights back exactly.
    """
    eye = torch.eye(in_size, device=device)
    shape, size = ((in_size, 1, 1, in_size), (1, out_size))
    if dim == -2:
        shape, size = ((in_size, 1, in_size, 1), (out_size, 1))
    weights = F.interpolate(eye.reshape(shape), size=size, mode="bilinear", align_corners=False)
    weights = weights.reshape(in_size, out_size).cpu()
    i0 = (weights > 0).byte().argmax(dim=0)
    i1 = (i0 + 1).clamp(max=in_size - 1)
    lam = weights[i1, torch.arange(out_size)].double()
    # Where the second source pixel carries no weight (or is the first), the value is exact.
    i1 = torch.where((lam > 0) & (i1 > i0), i1, i0)
    lam = torch.where(i1 > i0, lam, 0.0)
    _, counts = torch.unique_consecutive(i0 * 2 + (i1 - i0), return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    tensors = (i0[start], i1[start], start, counts, lam)
    return AxisPlan(*(t.to(device) for t in tensors), int(counts.max()))


def cell_bounds(maps: Tensor, rows: AxisPlan, cols: AxisPlan) -> tuple[Tensor, Tensor]:
    """Min and max of each cell's four source corners: (P, Gy, Gx) each, dtype of ``maps``."""
    top, bottom = maps[:, rows.i0], maps[:, rows.i1]
    row_min, row_max = torch.minimum(top, bottom), torch.maximum(top, bottom)
    cell_min = torch.minimum(row_min[:, :, cols.i0], row_min[:, :, cols.i1])
    cell_max = torch.maximum(row_max[:, :, cols.i0], row_max[:, :, cols.i1])
    return cell_min, cell_max


def group_overlap(plan: AxisPlan, edges: Tensor) -> Tensor:
    """Pixels shared by each group and each segment ``[edges[s], edges[s+1])``: (P, G, S)."""
    first = plan.start[None, :, None]
    last = first + plan.size[None, :, None]
    lo = torch.maximum(first, edges[:, None, :-1])
    hi = torch.minimum(last, edges[:, None, 1:])
    return (hi - lo).clamp(min=0)


@dataclass
class CellPixels:
    """The exact values of K cells' pixels, padded to the largest group: (K, Ry, Rx)."""

    values: Tensor  # float64, -inf on padding
    rows: Tensor  # (K, Ry) output row of each padded row (clamped inside the image)
    cols: Tensor  # (K, Rx)
    valid: Tensor  # (K, Ry, Rx) bool


def cell_pixels(
    maps: Tensor, rows: AxisPlan, cols: AxisPlan, pair: Tensor, gy: Tensor, gx: Tensor
) -> CellPixels:
    """Evaluate cells (``pair``, ``gy``, ``gx``) of ``maps`` (P, h, w) in float64.

    The value is ``top + lam_y * (bottom - top)`` with ``top``/``bottom`` interpolated along x the
    same way: exact on plateaus, and never outside the range of the four corners.
    """

    def axis(plan: AxisPlan, group: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        offset = torch.arange(plan.max_size, device=group.device)
        index = plan.start[group, None] + offset
        valid = offset < plan.size[group, None]
        index = index.clamp(max=len(plan.lam) - 1)
        return index, valid, plan.lam[index]

    row, row_valid, lam_y = axis(rows, gy)
    col, col_valid, lam_x = axis(cols, gx)
    y0, y1, x0, x1 = rows.i0[gy], rows.i1[gy], cols.i0[gx], cols.i1[gx]
    corners = [
        maps[pair, y, x].double()[:, None] for y, x in ((y0, x0), (y0, x1), (y1, x0), (y1, x1))
    ]
    a, b, c, d = corners
    top = a + lam_x * (b - a)
    bottom = c + lam_x * (d - c)
    values = top[:, None, :] + lam_y[:, :, None] * (bottom - top)[:, None, :]
    valid = row_valid[:, :, None] & col_valid[:, None, :]
    values = values.masked_fill_(~valid, -torch.inf)
    return CellPixels(values, row, col, valid)
