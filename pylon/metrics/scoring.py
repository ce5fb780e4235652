"""Score probability maps against boxes: peak, point hit, IoBB and IoU of each (map, boxes) pair.

Works cell by cell on the bilinear up-sampled map (``pylon.metrics.bilinear``) without
materialising it: only the cells that can hold the peak, and the cells the mask threshold may
cross, are evaluated pixel by pixel (in float64, from torch's float32 weights).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from pylon.metrics.bilinear import (
    BLOCK,
    AxisPlan,
    CellPixels,
    axis_plan,
    block_bounds,
    cell_bounds,
    cell_pixels,
    exact_sigmoid,
    group_overlap,
    keeps_plateaus,
    pad_edges,
    pick,
)

Scores = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # peak_row, peak_col, point_hit, iobb, iou

# Pixels evaluated per batch of cells (float64 values and a few same-sized temporaries).
_PIXELS_PER_BATCH = 2**17
# Up-sampled float32 maps per batch of pairs scored densely.
_DENSE_BYTES = 24 * 2**20
# Float32 bounds are compared against float64 thresholds moved outwards by this much (relative),
# more than the rounding of either; cells within the margin are evaluated pixel by pixel.
_MARGIN = 2.0**-20
# Bounds from the sigmoid of raw bounds hold within float32 rounding (a few ulp) only for normal
# float32 numbers: pairs whose peak is below this are scored densely.
_SMALLEST_PEAK = 2.0**-100


@dataclass(frozen=True)
class _Source:
    """The maps being scored: pair ``p`` is map ``map_index[p]`` (default ``p``) of ``padded``,
    raw scores whose sigmoid is the probability if ``logits``."""

    padded: Tensor
    rows: AxisPlan
    cols: AxisPlan
    map_index: Tensor | None
    logits: bool

    def bounds(self, pair: Tensor, by: Tensor, bx: Tensor) -> tuple[Tensor, Tensor]:
        return cell_bounds(
            self.padded, self.rows, self.cols, pair, by, bx,
            map_index=self.map_index, logits=self.logits,
        )  # fmt: skip

    def pixels(self, pair: Tensor, gy: Tensor, gx: Tensor, span=None) -> CellPixels:
        return cell_pixels(
            self.padded, self.rows, self.cols, pair, gy, gx, span,
            map_index=self.map_index, logits=self.logits,
        )  # fmt: skip


def padded_boxes(box_pair: Tensor, box_xywh: Tensor, num_pairs: int, size: tuple[int, int]):
    """Per pair, its boxes' pixel extents (P, K) as half-open [x0, x1) x [y0, y1), clipped.

    A box covers rows int(y) .. int(y) + int(h) - 1 and columns int(x) .. int(x) + int(w) - 1;
    missing slots (pairs with fewer than K boxes) are empty boxes.
    """
    height, width = size
    order = torch.argsort(box_pair, stable=True)
    sorted_pair = box_pair[order]
    slot = torch.empty_like(box_pair)
    slot[order] = torch.arange(len(box_pair), device=box_pair.device) - torch.searchsorted(
        sorted_pair, sorted_pair
    )
    num_slots = int(slot.max()) + 1 if len(slot) else 1
    x, y, w, h = box_xywh.trunc().long().unbind(1)
    extents = torch.zeros(4, num_pairs, num_slots, dtype=torch.long, device=box_pair.device)
    for k, (lo, hi, limit) in enumerate([(x, x + w, width), (y, y + h, height)]):
        extents[2 * k, box_pair, slot] = lo.clamp(0, limit)
        extents[2 * k + 1, box_pair, slot] = hi.clamp(0, limit)
    return extents.unbind(0)


def _edges(lo: Tensor, hi: Tensor) -> Tensor:
    """Cut an axis at every box edge: sorted boundaries (P, S + 1) of S segments."""
    return torch.cat([lo, hi], dim=1).sort(dim=1).values


def _covered(row_edges: Tensor, col_edges: Tensor, x0, x1, y0, y1) -> Tensor:
    """Which cells (P, Sy, Sx) of the grid cut at every box edge lie in the union of the boxes."""

    def inside(edges: Tensor, lo: Tensor, hi: Tensor) -> Tensor:  # (P, S, K)
        first, last = edges[:, :-1, None], edges[:, 1:, None]
        return (first < last) & (lo[:, None, :] <= first) & (last <= hi[:, None, :])

    in_y, in_x = inside(row_edges, y0, y1), inside(col_edges, x0, x1)
    return (in_y[:, :, None, :] & in_x[:, None, :, :]).any(dim=3)


def _point_hits(peak_row, peak_col, box_pair, box_xywh, num_pairs: int) -> Tensor:
    x, y, w, h = box_xywh.unbind(1)
    row, col = peak_row[box_pair].double(), peak_col[box_pair].double()
    box_hit = (x <= col) & (col <= x + w) & (y <= row) & (row <= y + h)
    hits = torch.zeros(num_pairs, dtype=torch.long, device=box_pair.device)
    return hits.index_add_(0, box_pair, box_hit.long()) > 0


def _ratios(inter: Tensor, mask_area: Tensor, gt_area: Tensor) -> tuple[Tensor, Tensor]:
    return inter / mask_area, inter / (mask_area + gt_area - inter)


def score_dense(
    maps: Tensor, box_pair: Tensor, box_xywh: Tensor, image_size: tuple[int, int]
) -> Scores:
    """Score P maps (P, h, w) on torch's float32 up-sampled maps (box_pair indexes into P)."""
    num_pairs = len(maps)
    height, width = image_size
    up = F.interpolate(maps[:, None], size=image_size, mode="bilinear", align_corners=False)
    up = up[:, 0]

    # First maximum in row-major order: the first row holding the maximum, then its first column.
    row_max = up.amax(dim=2)
    peak_value = row_max.amax(dim=1)
    peak_row = (row_max == peak_value[:, None]).byte().argmax(dim=1)
    at_peak_row = up[torch.arange(num_pairs, device=up.device), peak_row]
    peak_col = (at_peak_row == peak_value[:, None]).byte().argmax(dim=1)
    point_hit = _point_hits(peak_row, peak_col, box_pair, box_xywh, num_pairs)

    # The spec's "scale so the max is 1, then threshold at 0.5"; a zero max gives NaN: no mask.
    mask = up.div_(peak_value[:, None, None]).gt_(0.5)  # in place: 0./1. floats

    # Mask pixels per cell of the grid cut at every box edge: two small matrix products (exact:
    # integer sums far below 2**24).
    x0, x1, y0, y1 = padded_boxes(box_pair, box_xywh, num_pairs, image_size)
    row_edges, col_edges = _edges(y0, y1), _edges(x0, x1)

    def segments(edges: Tensor, length: int) -> Tensor:  # (P, length, S) indicator
        pixel = torch.arange(length, device=edges.device)[None, :, None]
        return ((pixel >= edges[:, None, :-1]) & (pixel < edges[:, None, 1:])).float()

    ones = torch.ones(num_pairs, width, 1, device=mask.device)
    col_weights = torch.cat([segments(col_edges, width), ones], dim=2).transpose(1, 2)
    per_row = torch.bmm(col_weights.contiguous(), mask.transpose(1, 2)).double()  # (P, Sx+1, H)
    mask_area = per_row[:, -1].sum(dim=1)
    row_seg = segments(row_edges, height).double()
    cell_counts = torch.bmm(per_row[:, :-1], row_seg).transpose(1, 2)  # (P, Sy, Sx)

    covered = _covered(row_edges, col_edges, x0, x1, y0, y1)
    cell_area = (row_edges.diff(dim=1)[:, :, None] * col_edges.diff(dim=1)[:, None, :]).double()
    inter = (cell_counts * covered).sum(dim=(1, 2))
    gt_area = (cell_area * covered).sum(dim=(1, 2))
    return (peak_row, peak_col, point_hit, *_ratios(inter, mask_area, gt_area))


def _cell_batches(pair: Tensor, gy: Tensor, gx: Tensor, rows: AxisPlan, cols: AxisPlan):
    """Batches (pair, gy, gx, span) of cells; cells of the usual size apart from the others (at
    the borders), so that most batches need neither padding nor a validity mask."""
    usual = (pick(rows.size, gy) == rows.usual_size) & (pick(cols.size, gx) == cols.usual_size)
    for subset, span in ((usual, (rows.usual_size, cols.usual_size)), (~usual, None)):
        index = subset.nonzero()[:, 0]
        span = span or (rows.max_size, cols.max_size)
        step = max(1, _PIXELS_PER_BATCH // (span[0] * span[1]))
        for batch in index.split(step):
            yield pick(pair, batch), pick(gy, batch), pick(gx, batch), span


def _cells_of_blocks(source: _Source, pair, by, bx, select):
    """The cells of blocks (pair, by, bx) for which ``select(cell_min, cell_max, pair)`` holds."""
    cell_min, cell_max = source.bounds(pair, by, bx)
    k, i, j = select(cell_min, cell_max, pair).nonzero(as_tuple=True)
    return pick(pair, k), pick(by, k) * BLOCK + i, pick(bx, k) * BLOCK + j


def _peaks(source: _Source, block_max: Tensor, width: int):
    """Peak value, row, col of each pair (first maximum in row-major order) and whether it is tied.

    The best pixel of the most promising cell is a lower bound of the peak; only the blocks, then
    the cells, whose largest corner reaches it can hold the peak, and only those are evaluated.
    """
    num_pairs, _, num_bx = block_max.shape
    device = block_max.device
    rows, cols = source.rows, source.cols
    pairs = torch.arange(num_pairs, device=device)
    top = block_max.flatten(1).argmax(dim=1)
    _, top_max = source.bounds(pairs, top // num_bx, top % num_bx)
    cell = top_max.flatten(1).argmax(dim=1)
    gy, gx = (top // num_bx) * BLOCK + cell // BLOCK, (top % num_bx) * BLOCK + cell % BLOCK
    first = source.pixels(pairs, gy, gx)
    if first.valid is not None:
        first.values.masked_fill_(~first.valid, -torch.inf)
    lower = first.values.flatten(1).amax(dim=1)
    reach = (lower * (1 - _MARGIN)).float()
    pair, by, bx = (block_max >= reach[:, None, None]).nonzero(as_tuple=True)
    candidates = _cells_of_blocks(
        source, pair, by, bx, lambda lo, hi, p: hi >= pick(reach, p)[:, None, None]
    )

    pairs, best, where, equal = [], [], [], []
    for p, gy, gx, span in _cell_batches(*candidates, rows, cols):
        pixels = source.pixels(p, gy, gx, span)
        if pixels.valid is not None:
            pixels.values.masked_fill_(~pixels.valid, -torch.inf)
        flat = pixels.values.flatten(1)
        value = flat.amax(dim=1)
        at_max = flat == value[:, None]
        first_max = at_max.byte().argmax(dim=1)
        row = pixels.rows.gather(1, (first_max // span[1])[:, None])[:, 0]
        col = pixels.cols.gather(1, (first_max % span[1])[:, None])[:, 0]
        pairs.append(p)
        best.append(value)
        where.append(row * width + col)
        equal.append(at_max.sum(dim=1))
    pair, best, where, equal = (torch.cat(t) for t in (pairs, best, where, equal))

    peak = torch.full((num_pairs,), -torch.inf, dtype=torch.float64, device=device)
    peak = peak.scatter_reduce_(0, pair, best, reduce="amax")
    winner = best == pick(peak, pair)
    first_pixel = torch.full((num_pairs,), width * len(rows.lam), device=device)
    first_pixel = first_pixel.scatter_reduce_(0, pair[winner], where[winner], reduce="amin")
    at_peak = torch.zeros(num_pairs, dtype=torch.long, device=device)
    tied = at_peak.index_add_(0, pair[winner], equal[winner]) > 1
    return peak, first_pixel // width, first_pixel % width, tied


def _segment_of_groups(start: Tensor, size: Tensor, edges: Tensor) -> tuple[Tensor, Tensor]:
    """Per pair and group (P, G): its segment of the axis cut at ``edges`` (P, S + 1), counted
    from 1 (0 and S + 1: before the first and after the last edge), and whether an edge cuts it."""
    first = start.expand(len(edges), -1).contiguous()
    last = first + size
    before_first = torch.searchsorted(edges, first, right=True)
    before_last = torch.searchsorted(edges, last, right=False)
    return before_first, before_last > before_first


def _pixel_in_boxes(rows: Tensor, cols: Tensor, x0, x1, y0, y1) -> Tensor:
    """(K, Ry, Rx): pixel (rows[k, i], cols[k, j]) in any of the boxes (K, B) of cell k's pair."""
    in_y = (rows[:, :, None] >= y0[:, None, :]) & (rows[:, :, None] < y1[:, None, :])
    in_x = (cols[:, :, None] >= x0[:, None, :]) & (cols[:, :, None] < x1[:, None, :])
    return (in_y[:, :, None, :] & in_x[:, None, :, :]).any(dim=3)


def _whole_counts(row_weights: Tensor, inside: Tensor, col_weights: Tensor) -> Tensor:
    """Pixels of the ``inside`` groups per box-grid cell, plus totals: (P, Sy + 1, Sx + 1).

    ``row_weights`` (P, Gy, Sy + 1) and ``col_weights`` (P, Gx, Sx + 1) hold each group's pixels
    per segment and, last, its size. Exact: the first product sums at most H per entry in float32.
    """
    per_col = torch.bmm(row_weights.transpose(1, 2).float(), inside.float())
    return torch.bmm(per_col.double(), col_weights.double())


def score_cells(
    maps: Tensor,
    box_pair: Tensor,
    box_xywh: Tensor,
    image_size: tuple[int, int],
    bounds: tuple[Tensor, Tensor] | None = None,
    *,
    map_index: Tensor | None = None,
    logits: bool = False,
) -> tuple[Scores, Tensor, Tensor]:
    """Score P maps cell by cell (arguments as for ``score_chunk``); also returns which pairs'
    maximum is tied and which pairs' bounds may be off (tiny peaks of raw maps).

    Blocks, then cells, whose source pixels all lie clearly above (below) half the peak count
    whole, their overlap with the boxes by small matrix products; only cells the threshold may
    cross are evaluated pixel by pixel.
    """
    _, in_height, in_width = maps.shape
    num_pairs = len(maps) if map_index is None else len(map_index)
    height, width = image_size
    device = maps.device
    rows = axis_plan(in_height, height, device, -2)
    cols = axis_plan(in_width, width, device, -1)
    padded = pad_edges(maps, rows, cols)
    if bounds is None:
        if map_index is not None:  # only the scored maps
            padded, map_index = pick(padded, map_index), None
        bounds = block_bounds(padded)
    block_min, block_max = bounds
    if logits:  # within a few float32 ulp of the bounds of the probabilities (see _MARGIN)
        block_min, block_max = block_min.sigmoid(), block_max.sigmoid()
    source = _Source(padded, rows, cols, map_index, logits)

    peak, peak_row, peak_col, tied = _peaks(source, block_max, width)
    point_hit = _point_hits(peak_row, peak_col, box_pair, box_xywh, num_pairs)

    # The spec's "scale so the max is 1, then threshold at 0.5": value > peak / 2.
    half = 0.5 * peak
    above, below = (half * (1 + _MARGIN)).float(), (half * (1 - _MARGIN)).float()
    block_in = block_min > above[:, None, None]
    pair, by, bx = (~block_in & (block_max >= below[:, None, None])).nonzero(as_tuple=True)
    cell_min, cell_max = source.bounds(pair, by, bx)
    cell_in = cell_min > pick(above, pair)[:, None, None]
    cell_mixed = ~cell_in & (cell_max >= pick(below, pair)[:, None, None])

    x0, x1, y0, y1 = padded_boxes(box_pair, box_xywh, num_pairs, image_size)
    row_edges, col_edges = _edges(y0, y1), _edges(x0, x1)
    covered = _covered(row_edges, col_edges, x0, x1, y0, y1)
    cell_area = (row_edges.diff(dim=1)[:, :, None] * col_edges.diff(dim=1)[:, None, :]).double()
    gt_area = (cell_area * covered).sum(dim=(1, 2))

    # Whole blocks: their pixels per box-grid cell, by two small matrix products.
    def weights(start: Tensor, size: Tensor, edges: Tensor) -> Tensor:
        overlap = group_overlap(start, size, edges)
        return torch.cat([overlap, size.expand(len(edges), -1)[:, :, None]], dim=2)

    row_weights = weights(*rows.block_groups(), row_edges)
    col_weights = weights(*cols.block_groups(), col_edges)
    counts = _whole_counts(row_weights, block_in, col_weights)
    mask_area = counts[:, -1, -1].clone()
    inter = (counts[:, :-1, :-1] * covered).sum(dim=(1, 2))

    # Blocks and cells lie wholly inside or outside the boxes unless a box edge cuts them; only
    # cut ones need their overlap with the boxes (whole cells) or pixels (mixed cells).
    padded_covered = F.pad(covered, (1, 1, 1, 1)).flatten()
    num_sy, num_sx = covered.shape[1] + 2, covered.shape[2] + 2

    def box_lookup(groups_y, groups_x):
        """For groups (start, size) along y and x: a function of (pair, group y, group x)
        telling whether the group lies in the boxes, uncut, and whether an edge cuts it."""
        seg_y, cut_y = (t.flatten() for t in _segment_of_groups(*groups_y, row_edges))
        seg_x, cut_x = (t.flatten() for t in _segment_of_groups(*groups_x, col_edges))
        num_gy, num_gx = len(groups_y[0]), len(groups_x[0])

        def lookup(p: Tensor, gy: Tensor, gx: Tensor) -> tuple[Tensor, Tensor]:
            at_y, at_x = p * num_gy + gy, p * num_gx + gx
            segment = (p * num_sy + pick(seg_y, at_y)) * num_sx + pick(seg_x, at_x)
            cut = pick(cut_y, at_y) | pick(cut_x, at_x)
            return pick(padded_covered, segment) & ~cut, cut

        return lookup

    # Whole cells of undecided blocks: their pixels per block, and per box-grid cell for the
    # blocks that a box edge cuts (small matrix products, as for whole blocks).
    def cell_sizes(plan: AxisPlan, block: Tensor) -> tuple[Tensor, Tensor]:
        group = block[:, None] * BLOCK + torch.arange(BLOCK, device=device)
        return pick(plan.start, group), pick(plan.size, group)

    row_groups, col_groups = cell_sizes(rows, by), cell_sizes(cols, bx)
    area = ((cell_in * col_groups[1][:, None, :]).sum(dim=2) * row_groups[1]).sum(dim=1)
    area = area.double()
    mask_area.index_add_(0, pair, area)
    whole, cut = box_lookup(rows.block_groups(), cols.block_groups())(pair, by, bx)
    inter.index_add_(0, pair, area * whole)
    part = cut.nonzero()[:, 0]
    if len(part):
        p = pick(pair, part)
        row_weights = weights(*(pick(t, part) for t in row_groups), pick(row_edges, p))
        col_weights = weights(*(pick(t, part) for t in col_groups), pick(col_edges, p))
        counts = _whole_counts(row_weights, pick(cell_in, part), col_weights)
        inter.index_add_(0, p, (counts[:, :-1, :-1] * pick(covered, p)).sum(dim=(1, 2)))

    in_boxes_uncut = box_lookup((rows.start, rows.size), (cols.start, cols.size))
    k, i, j = cell_mixed.nonzero(as_tuple=True)
    mixed = pick(pair, k), pick(by, k) * BLOCK + i, pick(bx, k) * BLOCK + j
    for p, gy, gx, span in _cell_batches(*mixed, rows, cols):
        pixels = source.pixels(p, gy, gx, span)
        inside = pixels.values > pick(half, p)[:, None, None]
        if pixels.valid is not None:
            inside &= pixels.valid
        in_mask = inside.flatten(1).sum(dim=1).double()
        mask_area.index_add_(0, p, in_mask)
        whole, cut = in_boxes_uncut(p, gy, gx)
        inter.index_add_(0, p, in_mask * whole)
        part = cut.nonzero()[:, 0]
        if len(part):
            q = p[part]
            in_boxes = _pixel_in_boxes(
                pixels.rows[part], pixels.cols[part], x0[q], x1[q], y0[q], y1[q]
            )
            inter.index_add_(0, q, (inside[part] & in_boxes).flatten(1).sum(dim=1).double())
    unsure = peak < _SMALLEST_PEAK if logits else torch.zeros_like(tied)
    return (peak_row, peak_col, point_hit, *_ratios(inter, mask_area, gt_area)), tied, unsure


def score_chunk(
    maps: Tensor,
    box_pair: Tensor,
    box_xywh: Tensor,
    image_size: tuple[int, int],
    bounds: tuple[Tensor, Tensor] | None = None,
    *,
    map_index: Tensor | None = None,
    logits: bool = False,
) -> Scores:
    """Score P maps against their boxes (box_pair indexes into P).

    ``maps`` (M, h, w): pair ``p`` is map ``map_index[p]`` (default: M = P, map ``p``), of
    probabilities, or of raw scores whose sigmoid is the probability if ``logits``.
    ``bounds``: ``bilinear.block_bounds`` of the P maps' values in ``maps``, if known (maps
    with sides multiples of BLOCK).

    Where the maximum is reached by several pixels (plateaus, the repeated rows and columns past
    the border) and torch's kernel for this shape does not keep equal values equal, its float32
    rounding decides which one ``F.interpolate`` reports first: those pairs are scored on torch's
    own up-sampled map, as a per-image loop would.
    """
    scores, tied, redo = score_cells(
        maps, box_pair, box_xywh, image_size, bounds, map_index=map_index, logits=logits
    )
    if tied.any() and not keeps_plateaus(maps.shape[1:], image_size, maps.device):
        redo |= tied
    if not redo.any():
        return scores
    step = max(1, _DENSE_BYTES // (4 * image_size[0] * image_size[1]))
    for part in redo.nonzero()[:, 0].split(step):
        chosen = torch.zeros_like(redo).index_fill_(0, part, True)
        keep = chosen[box_pair]
        renumber = torch.cumsum(chosen.long(), 0) - 1
        probs = pick(maps, part if map_index is None else pick(map_index, part))
        if logits:
            probs = exact_sigmoid(probs)
        dense = score_dense(probs, renumber[box_pair[keep]], box_xywh[keep], image_size)
        for full, value in zip(scores, dense, strict=True):
            full[part] = value.to(full.dtype)
    return scores
