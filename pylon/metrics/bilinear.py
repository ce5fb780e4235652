"""Bilinear up-sampling (align_corners=False) evaluated cell by cell, never at full resolution.

Output row ``r`` reads source rows ``i0[r]`` and ``i0[r] + 1`` (the last row repeated past the
border); the rows with the same ``i0`` form a row group, likewise for columns. A cell (row group x
column group) lies between the min and max of its four source corners, the 2x2 window at
``(i0, j0)`` (indices clamped to the map); a block of BLOCK x BLOCK cells between the min and max
of its (BLOCK + 1)^2 source pixels. Maps whose sides are not a multiple of BLOCK are edge-padded.

The maps may be raw scores whose sigmoid is the probability (``logits=True``): the sigmoid is
monotonic, so bounds are the sigmoid of the raw bounds (within float32 rounding, which callers
allow for), and exact values are needed only at the corners of the cells evaluated.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_MAPS_IN_CACHE = 8
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
    usual_size: int  # the most common group size
    pixel: Tensor  # (G, max_size) long: start[i] + k, clamped to the output
    pixel_lam: Tensor  # (G, max_size) float64: lam[pixel]
    has_empty: bool  # whether some group is empty

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
    max_size = int(counts.max())
    pixel = (start[:, None] + torch.arange(max_size)).clamp(max=out_size - 1)
    usual = int(torch.bincount(counts)[1:].argmax()) + 1
    start, counts, lam, pixel, pixel_lam = (
        t.to(device) for t in (start, counts, lam, pixel, lam[pixel])
    )
    has_empty = bool((counts == 0).any())
    return AxisPlan(start, counts, lam, max_size, usual, pixel, pixel_lam, has_empty)


def pad_edges(maps: Tensor, rows: AxisPlan, cols: AxisPlan) -> Tensor:
    """(P, h, w) -> (P, Gy, Gx), the last row and column repeated; ``maps`` itself if aligned."""
    num, height, width = maps.shape
    if (height, width) == (len(rows.size), len(cols.size)):
        return maps
    padded = maps.new_empty(num, len(rows.size), len(cols.size))
    padded[:, :height, :width] = maps
    padded[:, height:, :width] = maps[:, -1:]
    padded[:, :, width:] = padded[:, :, width - 1 : width]
    return padded


def keeps_plateaus(in_size: tuple[int, int], out_size: tuple[int, int], device) -> bool:
    """Whether torch's kernel for this shape keeps equal values equal, bit for bit.

    Maps constant along x must give identical output columns, maps constant along y identical
    rows. Then values tied in exact arithmetic are tied in torch's too, and ties break alike;
    torch's small-output kernels round ``w0 * a + w1 * a`` differently from pixel to pixel.
    """
    return _keeps_plateaus(tuple(in_size), tuple(out_size), torch.device(device))


@functools.lru_cache(maxsize=32)
def _keeps_plateaus(in_size, out_size, device) -> bool:
    height, width = in_size
    gen = torch.Generator().manual_seed(0)
    scale = torch.tensor([1.0, 1e-3, 1e-7, 0.5])[:, None, None, None]
    along_y = (torch.rand(4, 1, height, 1, generator=gen) * scale).expand(-1, -1, -1, width)
    along_x = (torch.rand(4, 1, 1, width, generator=gen) * scale).expand(-1, -1, height, -1)
    maps = torch.cat([along_y, along_x]).contiguous().to(device)
    up = F.interpolate(maps, size=out_size, mode="bilinear", align_corners=False)
    return bool((up[:4] == up[:4, :, :, :1]).all() and (up[4:] == up[4:, :, :1]).all())


def row_bounds(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Min and max over rows ``k * BLOCK .. (k + 1) * BLOCK`` (clamped), those a block's source
    pixels span: (P, Gy / BLOCK, Gx) each.

    ``maps`` (P, Gy, Gx) as from ``pad_edges``: the sides are multiples of BLOCK. Cheapest on a
    few maps still in the cache (``torch.aminmax`` is slower than the two).
    """
    num, height, width = maps.shape
    by_rows = maps.reshape(num, height // BLOCK, BLOCK, width)
    low, high = by_rows.amin(dim=2), by_rows.amax(dim=2)
    next_row = maps[:, BLOCK::BLOCK]
    low[:, :-1] = torch.minimum(low[:, :-1], next_row)
    high[:, :-1] = torch.maximum(high[:, :-1], next_row)
    return low, high


def block_bounds(maps: Tensor, rows: tuple[Tensor, Tensor] | None = None):
    """Min and max over each block's (BLOCK + 1)^2 source pixels (clamped): (P, Hb, Wb) each.

    ``rows``: ``row_bounds(maps)`` if already known.
    """
    if rows is None:
        parts = [row_bounds(part) for part in maps.split(_MAPS_IN_CACHE)]
        rows = (torch.cat([low for low, _ in parts]), torch.cat([high for _, high in parts]))
    rows_min, rows_max = rows
    # Reducing the short last dimension: pooling is several times faster than amax/amin.
    block_min = F.max_pool1d(rows_min.neg(), BLOCK).neg_()
    block_min[:, :, :-1] = torch.minimum(block_min[:, :, :-1], rows_min[:, :, BLOCK::BLOCK])
    block_max = F.max_pool1d(rows_max, BLOCK)
    block_max[:, :, :-1] = torch.maximum(block_max[:, :, :-1], rows_max[:, :, BLOCK::BLOCK])
    return block_min, block_max


# Torch's CPU sigmoid evaluates whole SIMD vectors (2 x 16 floats with AVX-512) with a vectorised
# exp and the rest of each thread's range with the scalar one, which rounds differently. Whole
# maps go through the vector code, so exact values pad to whole vectors, and pieces stay below
# torch's grain size (32768), so that no thread split cuts a vector.
_VECTOR = 64
_SIGMOID_PIECE = 2**14


def exact_sigmoid(x: Tensor) -> Tensor:
    """``sigmoid(x)`` bit for bit as torch computes it on whole maps (float32 ``x``)."""
    if x.device.type != "cpu":
        return x.sigmoid()
    n = x.numel()
    out = x.new_zeros(-(-n // _VECTOR) * _VECTOR)
    out[:n] = x.reshape(-1)
    for piece in out.split(_SIGMOID_PIECE):
        piece.sigmoid_()
    return out[:n].view(x.shape)


def pick(table: Tensor, index: Tensor) -> Tensor:
    """``table[index]`` along the first dimension (index_select: far faster than indexing)."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, *table.shape[1:])


def cell_bounds(
    padded: Tensor,
    rows: AxisPlan,
    cols: AxisPlan,
    pair: Tensor,
    by: Tensor,
    bx: Tensor,
    *,
    map_index: Tensor | None = None,
    logits: bool = False,
) -> tuple[Tensor, Tensor]:
    """Min and max of the four source corners of every cell of K blocks: (K, BLOCK, BLOCK).

    Pair ``p`` is map ``map_index[p]`` of ``padded`` (default: map ``p``); with ``logits`` the
    bounds are of the maps' sigmoid. Empty cells get min NaN and max -inf: no comparison
    against a threshold selects them.
    """
    num_y, num_x = padded.shape[1:]
    offset = torch.arange(BLOCK + 1, device=padded.device)
    gy, gx = by[:, None] * BLOCK + offset, bx[:, None] * BLOCK + offset
    if map_index is not None:
        pair = pick(map_index, pair)
    row_start = (pair[:, None] * num_y + gy.clamp(max=num_y - 1)) * num_x
    window = pick(padded.reshape(-1), row_start[:, :, None] + gx.clamp(max=num_x - 1)[:, None, :])
    row_min = torch.minimum(window[:, :-1], window[:, 1:])
    row_max = torch.maximum(window[:, :-1], window[:, 1:])
    cell_min = torch.minimum(row_min[:, :, :-1], row_min[:, :, 1:])
    cell_max = torch.maximum(row_max[:, :, :-1], row_max[:, :, 1:])
    if logits:
        cell_min.sigmoid_()
        cell_max.sigmoid_()
    if rows.has_empty or cols.has_empty:
        empty_y, empty_x = pick(rows.size, gy[:, :-1]) == 0, pick(cols.size, gx[:, :-1]) == 0
        empty = empty_y[:, :, None] | empty_x[:, None, :]
        cell_min.masked_fill_(empty, torch.nan)
        cell_max.masked_fill_(empty, -torch.inf)
    return cell_min, cell_max


def group_overlap(start: Tensor, size: Tensor, edges: Tensor) -> Tensor:
    """Pixels shared by groups (..., G) and segments ``[edges[s], edges[s+1])`` of edges
    (..., S + 1), the leading dimensions broadcast: (..., G, S)."""
    first = start[..., :, None]
    last = first + size[..., :, None]
    lo = torch.maximum(first, edges[..., None, :-1])
    hi = torch.minimum(last, edges[..., None, 1:])
    return (hi - lo).clamp(min=0)


@dataclass
class CellPixels:
    """The values of K cells' pixels, padded to ``span`` = (Ry, Rx) pixels: (K, Ry, Rx)."""

    values: Tensor  # float64
    rows: Tensor  # (K, Ry) output row of each padded row (clamped inside the image)
    cols: Tensor  # (K, Rx)
    valid: Tensor | None  # (K, Ry, Rx) bool, False on padding; None when there is none


def cell_pixels(
    padded: Tensor,
    rows: AxisPlan,
    cols: AxisPlan,
    pair: Tensor,
    gy: Tensor,
    gx: Tensor,
    span: tuple[int, int] | None = None,
    *,
    map_index: Tensor | None = None,
    logits: bool = False,
) -> CellPixels:
    """Evaluate cells (``pair``, ``gy``, ``gx``) of ``padded`` (P, Gy, Gx) in float64.

    The value is ``top + lam_y * (bottom - top)`` with ``top``/``bottom`` interpolated along x the
    same way: exact on plateaus, never outside the range of the four corners. ``span`` defaults
    to the largest groups; ``map_index`` and ``logits`` as for ``cell_bounds`` (the corners'
    sigmoid is ``exact_sigmoid``).
    """
    span_y, span_x = span or (rows.max_size, cols.max_size)

    def axis(plan: AxisPlan, group: Tensor, span: int) -> tuple[Tensor, Tensor | None, Tensor]:
        size = pick(plan.size, group)[:, None]
        valid = None
        if not bool((size == span).all()):
            valid = torch.arange(span, device=group.device) < size
        return pick(plan.pixel[:, :span], group), valid, pick(plan.pixel_lam[:, :span], group)

    row, row_valid, lam_y = axis(rows, gy, span_y)
    col, col_valid, lam_x = axis(cols, gx, span_x)
    num_y, num_x = padded.shape[1:]
    if map_index is not None:
        pair = pick(map_index, pair)
    y0, x0 = (pair * num_y + gy) * num_x, gx
    y1, x1 = y0 + num_x * (gy < num_y - 1), gx + (gx < num_x - 1)
    corners = pick(padded.reshape(-1), torch.stack([y0 + x0, y0 + x1, y1 + x0, y1 + x1]))
    if logits:
        corners = exact_sigmoid(corners)
    a, b, c, d = corners.double()[:, :, None].unbind(0)
    top = a + lam_x * (b - a)
    bottom = c + lam_x * (d - c)
    values = torch.addcmul(top[:, None, :], lam_y[:, :, None], (bottom - top)[:, None, :])
    valid = None
    if row_valid is not None and col_valid is not None:
        valid = row_valid[:, :, None] & col_valid[:, None, :]
    elif row_valid is not None or col_valid is not None:
        valid = (row_valid[:, :, None] if col_valid is None else col_valid[:, None, :]).expand(
            values.shape
        )
    return CellPixels(values, row, col, valid)
