"""Score probability maps against boxes: peak, point hit, IoBB and IoU of each (map, boxes) pair.

``score_chunk`` works cell by cell on the bilinear up-sampled map (``pylon.metrics.bilinear``)
without materialising it; pairs whose peak is a near-tie go through ``score_dense``, which
thresholds torch's own up-sampled map, so ties break exactly as ``F.interpolate`` breaks them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pylon.metrics.bilinear import AxisPlan, axis_plan, cell_bounds, cell_pixels, group_overlap

Scores = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # peak_row, peak_col, point_hit, iobb, iou

# Values closer than this (times the map's largest source value) count as tied. Torch's float32
# bilinear kernel is within a few float32 ulps (~6e-8 each) of the float64 values used here.
_TIE = 2e-6
# Pixels evaluated per batch of cells (float64 values and a few same-sized temporaries).
_PIXELS_PER_BATCH = 2**18


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

    # The union of a pair's boxes is a set of cells of the grid cut at every box edge. Counting mask
    # pixels per cell is two small matrix products (exact: integer sums far below 2**24).
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
    step = max(1, _PIXELS_PER_BATCH // (rows.max_size * cols.max_size))
    for start in range(0, len(pair), step):
        yield pair[start : start + step], gy[start : start + step], gx[start : start + step]


def _peaks(maps: Tensor, rows: AxisPlan, cols: AxisPlan, cell_max: Tensor, tie: Tensor):
    """Peak value, row, col of each pair and whether another pixel ties with it (within ``tie``).

    Only cells whose corner maximum can reach the best pixel of the most promising cell are
    evaluated.
    """
    num_pairs, num_cols = len(maps), len(cols)
    pairs = torch.arange(num_pairs, device=maps.device)
    top = cell_max.flatten(1).argmax(dim=1)
    first = cell_pixels(maps, rows, cols, pairs, top // num_cols, top % num_cols)
    lower = first.values.flatten(1).amax(dim=1)
    # float32 rounding of the bound is far inside the 2 * tie margin.
    reach = cell_max >= (lower - 2 * tie).float()[:, None, None]
    pair, gy, gx = reach.nonzero(as_tuple=True)

    best, near, row, col = [], [], [], []
    for batch in _cell_batches(pair, gy, gx, rows, cols):
        pixels = cell_pixels(maps, rows, cols, *batch)
        flat = pixels.values.flatten(1)
        value, where = flat.max(dim=1)
        best.append(value)
        near.append((flat >= (value - tie[batch[0]])[:, None]).sum(dim=1))
        width = pixels.cols.shape[1]
        row.append(pixels.rows.gather(1, (where // width)[:, None])[:, 0])
        col.append(pixels.cols.gather(1, (where % width)[:, None])[:, 0])
    best, near, row, col = (torch.cat(t) for t in (best, near, row, col))

    peak = torch.full((num_pairs,), -torch.inf, dtype=torch.float64, device=maps.device)
    peak = peak.scatter_reduce_(0, pair, best, reduce="amax")
    close_cells = torch.zeros(num_pairs, dtype=torch.long, device=maps.device)
    close_cells.index_add_(0, pair, (best >= peak[pair] - tie[pair]).long())
    winner = best == peak[pair]
    near_in_winner = torch.zeros_like(close_cells).index_add_(0, pair, (near - 1) * winner)
    tied = (close_cells > 1) | (near_in_winner > 0)
    # A pair's winning cell is unique unless it is tied, and then the dense path decides.
    peak_row = torch.zeros_like(close_cells).index_put_((pair[winner],), row[winner])
    peak_col = torch.zeros_like(close_cells).index_put_((pair[winner],), col[winner])
    return peak, peak_row, peak_col, tied


def _pixel_in_boxes(rows: Tensor, cols: Tensor, x0, x1, y0, y1) -> Tensor:
    """(K, Ry, Rx): pixel (rows[k, i], cols[k, j]) in any of the K cells' pair's boxes (K, B)."""
    in_y = (rows[:, :, None] >= y0[:, None, :]) & (rows[:, :, None] < y1[:, None, :])
    in_x = (cols[:, :, None] >= x0[:, None, :]) & (cols[:, :, None] < x1[:, None, :])
    return (in_y[:, :, None, :] & in_x[:, None, :, :]).any(dim=3)


def score_cells(
    maps: Tensor, box_pair: Tensor, box_xywh: Tensor, image_size: tuple[int, int]
) -> tuple[Scores, Tensor]:
    """Score P maps cell by cell in float64; also returns which pairs have a tied peak.

    Mask cells whose four corners are all clearly above (below) half the peak are counted whole
    (their overlap with the boxes by two small matrix products); only cells the threshold may
    cross are evaluated pixel by pixel.
    """
    num_pairs, in_height, in_width = maps.shape
    height, width = image_size
    device = maps.device
    rows = axis_plan(in_height, height, device, -2)
    cols = axis_plan(in_width, width, device, -1)
    cell_min, cell_max = cell_bounds(maps, rows, cols)
    tie = maps.flatten(1).amax(dim=1).double() * _TIE

    peak, peak_row, peak_col, tied = _peaks(maps, rows, cols, cell_max, tie)
    point_hit = _point_hits(peak_row, peak_col, box_pair, box_xywh, num_pairs)

    half = 0.5 * peak
    full_in = cell_min > (half + tie).float()[:, None, None]
    mixed = ~full_in & (cell_max >= (half - tie).float()[:, None, None])

    x0, x1, y0, y1 = padded_boxes(box_pair, box_xywh, num_pairs, image_size)
    row_edges, col_edges = _edges(y0, y1), _edges(x0, x1)
    covered = _covered(row_edges, col_edges, x0, x1, y0, y1)
    cell_area = (row_edges.diff(dim=1)[:, :, None] * col_edges.diff(dim=1)[:, None, :]).double()
    gt_area = (cell_area * covered).sum(dim=(1, 2))

    # Whole cells: pixels per (box-grid row segment, box-grid column segment), plus totals.
    row_weights = torch.cat(
        [group_overlap(rows, row_edges), rows.size.expand(num_pairs, -1)[:, :, None]], dim=2
    )
    col_weights = torch.cat(
        [group_overlap(cols, col_edges), cols.size.expand(num_pairs, -1)[:, :, None]], dim=2
    )
    per_col = torch.bmm(row_weights.transpose(1, 2).float(), full_in.float())  # (P, Sy+1, Gx)
    counts = torch.bmm(per_col.double(), col_weights.double())  # (P, Sy+1, Sx+1), exact
    mask_area = counts[:, -1, -1]
    inter = (counts[:, :-1, :-1] * covered).sum(dim=(1, 2))

    pair, gy, gx = mixed.nonzero(as_tuple=True)
    for batch in _cell_batches(pair, gy, gx, rows, cols):
        p = batch[0]
        pixels = cell_pixels(maps, rows, cols, *batch)
        inside = pixels.values > half[p][:, None, None]
        in_boxes = _pixel_in_boxes(pixels.rows, pixels.cols, x0[p], x1[p], y0[p], y1[p])
        mask_area.index_add_(0, p, inside.flatten(1).sum(dim=1).double())
        inter.index_add_(0, p, (inside & in_boxes).flatten(1).sum(dim=1).double())
    return (peak_row, peak_col, point_hit, *_ratios(inter, mask_area, gt_area)), tied


def score_chunk(
    maps: Tensor, box_pair: Tensor, box_xywh: Tensor, image_size: tuple[int, int]
) -> Scores:
    """Score P probability maps (P, h, w) against their boxes (box_pair indexes into P)."""
    scores, tied = score_cells(maps, box_pair, box_xywh, image_size)
    if tied.any():
        redo = tied.nonzero()[:, 0]
        keep = tied[box_pair]
        new_index = torch.cumsum(tied.long(), 0) - 1
        dense = score_dense(maps[redo], new_index[box_pair[keep]], box_xywh[keep], image_size)
        for full, part in zip(scores, dense, strict=True):
            full[redo] = part.to(full.dtype)
    return scores
