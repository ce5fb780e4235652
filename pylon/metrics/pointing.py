"""Pointing game (TorchRay) and energy-based pointing game (Score-CAM), one record per pair.

Both score every (image, class) pair that has at least one box, from the raw class map
``cams[i, c]`` (no sigmoid: a monotone sigmoid would not move the TorchRay peak in exact
arithmetic, but in float32 it saturates and creates ties; Score-CAM's energy is defined on the
ReLU of the raw map). The ground truth of a pair is the union of its boxes' pixels, a box
``(x, y, w, h)`` covering rows ``int(y) .. int(y)+int(h)-1`` and columns
``int(x) .. int(x)+int(w)-1`` clipped to the image (``pylon.metrics.boxes.pixel_extents``).

The maps of a chunk of pairs are up-sampled at once on the maps' device
(``pylon.metrics.peaks``), so memory stays bounded whatever the number of pairs.
:func:`pair_maps` (the chunks with their ground-truth masks) is shared with
``pylon.metrics.chexlocalize``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pylon.metrics.boxes import box_table, pixel_extents
from pylon.metrics.pairs import _BYTES_PER_PIXEL, as_cams, union_masks
from pylon.metrics.peaks import (
    as_image_size,
    check_maps,
    chunk_pairs,
    first_peaks,
    full_precision,
    upsample,
)
from pylon.metrics.records import PairRecords


@dataclass
class PairBoxes:
    """The scored pairs of a batch and their boxes.

    ``keys`` (P,) ascending ``image * C + class``; box ``b`` belongs to pair ``box_pair[b]`` (B,)
    as its ``slot[b]``-th box, with pixel extents ``extents[b]`` (row0, row1, col0, col1,
    half-open); the boxes of pair ``p`` are ``first_of_pair[p] .. first_of_pair[p+1]-1``. A pair
    may have no box (``extra_keys`` of :func:`pair_boxes`): its mask is empty.
    """

    keys: Tensor
    box_pair: Tensor
    slot: Tensor
    extents: Tensor
    first_of_pair: Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.keys)


def pair_boxes(
    cams: Tensor,
    boxes: Sequence[Sequence],
    size: tuple[int, int],
    extra_keys: Tensor | None = None,
) -> PairBoxes:
    """Validate ``boxes`` (``pylon.metrics.boxes.box_table``) and group them by pair.

    The pairs are those with at least one box, plus ``extra_keys`` (``image * C + class``, long)
    when given, ascending."""
    num_images, num_classes = cams.shape[:2]
    table = box_table(boxes, num_images, num_classes, size)
    box_keys = table.image * num_classes + table.cls
    all_keys = box_keys if extra_keys is None else torch.cat([box_keys, extra_keys.long()])
    keys = torch.unique(all_keys)  # sorted
    box_pair = torch.searchsorted(keys, box_keys)
    order = torch.argsort(box_pair, stable=True)
    box_pair, xywh = box_pair[order], table.xywh[order]
    first_of_pair = torch.searchsorted(box_pair, torch.arange(len(keys) + 1))
    slot = torch.arange(len(box_pair)) - first_of_pair[box_pair]
    return PairBoxes(keys, box_pair, slot, pixel_extents(xywh, size), first_of_pair, num_classes)


def pair_maps(
    cams: Tensor,
    pairs: PairBoxes,
    size: tuple[int, int],
    *,
    with_gt: bool = True,
    bytes_per_pixel: int = _BYTES_PER_PIXEL,
    chunk_bytes: int | None = None,
) -> Iterator[tuple[int, int, Tensor, Tensor | None]]:
    """Chunks ``(start, stop, up, gt)`` of the pairs ``start .. stop-1``.

    ``up`` (p, H, W) float32: the raw maps up-sampled bilinearly (``align_corners=False``,
    ``pylon.metrics.peaks.upsample``, no sigmoid); ``gt`` (p, H, W) float32 0/1: the union of each
    pair's boxes (None unless ``with_gt``). Both on the maps' device, under ``torch.no_grad`` and
    with autocast off. Raises ``ValueError`` naming the first scored map with NaN or infinity."""
    device = cams.device
    flat = cams.flatten(0, 1)
    step = chunk_pairs(size, device, bytes_per_pixel, chunk_bytes)
    with torch.no_grad(), full_precision(device):
        for start in range(0, len(pairs), step):
            stop = min(start + step, len(pairs))
            keys = pairs.keys[start:stop]
            maps = flat.index_select(0, keys.to(device))
            # apply_sigmoid=True only tells check_maps not to reject negative raw scores.
            check_maps(maps, True, _pair_name(keys, pairs.num_classes))
            up = upsample(maps, size, apply_sigmoid=False)
            gt = _union_masks(pairs, start, stop, size, device) if with_gt else None
            yield start, stop, up, gt


def _union_masks(pairs: PairBoxes, start: int, stop: int, size, device) -> Tensor:
    """The union of the boxes of each pair ``start .. stop-1``, (p, H, W) float32 0/1
    (:func:`pylon.metrics.pairs.union_masks`)."""
    first, last = int(pairs.first_of_pair[start]), int(pairs.first_of_pair[stop])
    pair = (pairs.box_pair[first:last] - start).to(device)
    slot = pairs.slot[first:last].to(device)
    ext = pairs.extents[first:last].to(device)
    return union_masks(pair, slot, ext, stop - start, size, device)


def union_areas(pairs: PairBoxes, size: tuple[int, int]) -> Tensor:
    """Pixels of the union of each pair's boxes, (P,) long: the extent's area for pairs with one
    box (or none), a count of the union mask (on the CPU, one pair at a time) for the others."""
    row0, row1, col0, col1 = pairs.extents.unbind(1)
    box_area = (row1 - row0).clamp(min=0) * (col1 - col0).clamp(min=0)
    area = torch.zeros(len(pairs), dtype=torch.long).index_add_(0, pairs.box_pair, box_area)
    several = (pairs.first_of_pair[1:] - pairs.first_of_pair[:-1] > 1).nonzero().flatten()
    for p in several.tolist():
        area[p] = _area(_union_masks(pairs, p, p + 1, size, torch.device("cpu")))[0]
    return area


def inside_boxes(pairs: PairBoxes, rows: Tensor, cols: Tensor) -> Tensor:
    """Whether pixel ``(rows[p], cols[p])`` lies in one of pair ``p``'s boxes, (P,) bool."""
    row0, row1, col0, col1 = pairs.extents.unbind(1)
    r, c = rows[pairs.box_pair], cols[pairs.box_pair]
    inside = (r >= row0) & (r < row1) & (c >= col0) & (c < col1)
    count = torch.zeros(len(pairs), dtype=torch.long).index_add_(0, pairs.box_pair, inside.long())
    return count > 0


def records(pairs: PairBoxes, value: Tensor, box_area: Tensor, size) -> PairRecords:
    """``PairRecords`` of ``pairs`` with ``value`` (P,) and ``box_area`` (P,)."""
    return PairRecords(
        pairs.keys // pairs.num_classes,
        pairs.keys % pairs.num_classes,
        value.double().cpu(),
        box_area.long().cpu(),
        torch.full((len(pairs),), size[0] * size[1], dtype=torch.long),
    )


def _area(gt: Tensor) -> Tensor:
    """Pixels of each mask of ``gt`` (p, H, W) 0/1 float32, long (exact counts)."""
    dtype = torch.float32 if gt.shape[1] * gt.shape[2] <= 2**24 else torch.float64
    return gt.sum(dim=(1, 2), dtype=dtype).long()


def pair_peaks(
    cams: Tensor, pairs: PairBoxes, size: tuple[int, int], chunk_bytes: int | None = None
) -> tuple[Tensor, Tensor]:
    """The first maximum (row, col) of each pair's map up-sampled bilinearly to ``size``
    (``align_corners=False``), (P,) long each, on the CPU; chunked as :func:`pair_maps`."""
    rows, cols = [], []
    for _, _, up, _ in pair_maps(
        cams, pairs, size, with_gt=False, bytes_per_pixel=4, chunk_bytes=chunk_bytes
    ):
        r, c, _ = first_peaks(up)
        rows.append(r.cpu())
        cols.append(c.cpu())
    if not rows:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(rows), torch.cat(cols)


def pointing_game(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    tolerance: int = 15,
    chunk_bytes: int | None = None,
) -> PairRecords:
    """TorchRay's pointing game (Zhang et al. 2018), one hit (1.0) or miss (0.0) per pair.

    Reference: facebookresearch/TorchRay, ``torchray/benchmark/pointing_game.py``
    (``PointingGame.evaluate``), ``torchray/attribution/common.py`` (``resize_saliency``) and
    ``torchray/benchmark/datasets.py`` (``voc_as_mask``).

    For every (image, class) pair with at least one box: the raw map ``cams[i, c]`` is up-sampled
    to ``image_size`` with ``F.interpolate(bilinear, align_corners=False)`` in float32, its point
    is the first maximum in row-major order (``argmax`` of the flattened map), and the pair is a
    hit when some pixel ``(row, col)`` of the union of the class's boxes lies strictly inside the
    disc ``(row - y)**2 + (col - x)**2 < tolerance**2`` around the point (row ``y``, column
    ``x``). With ``tolerance=1`` the point itself must lie in a box. A pair whose boxes cover no
    pixel (zero width or height) is a miss, as TorchRay's empty mask is.

    Box pixels: TorchRay rasterises a VOC box as ``mask[ymin-1 : ymax, xmin-1 : xmax] = 1`` (VOC's
    1-based inclusive corners). Here a box covers rows ``int(y) .. int(y)+int(h)-1`` and columns
    ``int(x) .. int(x)+int(w)-1``, clipped to the image; VOC boxes read with
    ``inclusive_boxes=True`` (``x = xmin - 1``, ``w = xmax - xmin + 1``,
    ``pylon.data.voc.parse_annotation``) give exactly TorchRay's mask; the reference-style reading
    (``x = xmin``, ``w = xmax - xmin``) gives the mask one pixel down-right and one narrower.

    The tolerance is in pixels of ``image_size``: TorchRay's default 15 was set on the ~500 px VOC
    and COCO originals (about 3 % of the side), so on a 256 px input 15 px is twice as lenient;
    report the tolerance used (and scale it, e.g. ``round(15 * 256 / 500) = 8``, to compare).

    Aggregation: TorchRay's ``accuracy`` is the mean of ``hits / (hits + misses)`` over *all*
    classes, a class without pairs counting as 0. ``reduce_records(records, C)`` instead gives
    ``pooled`` (every pair weighs the same) and ``macro`` (mean over the classes that have pairs);
    the two agree with TorchRay only when every class has pairs (``macro``).

    Args:
        cams: raw class maps (N, C, h, w), torch (any device; the chunks run there) or numpy.
        boxes: N lists of ``(x, y, w, h, class_index)`` in pixels of ``image_size``.
        image_size: (H, W) of the network input.
        tolerance: a positive integer, pixels.
        chunk_bytes: memory for one chunk of up-sampled maps (default 8 MiB on the CPU, 512 MiB
            on a GPU).

    Returns:
        ``PairRecords`` (pairs ordered by image then class), ``value`` 1.0 / 0.0. Raises
        ``ValueError`` for bad boxes, a bad tolerance, or a scored map with NaN or infinity.
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Integral) or tolerance < 1:
        raise ValueError(f"tolerance must be a positive integer (pixels), got {tolerance!r}")
    tolerance = int(tolerance)
    cams = as_cams(cams)
    size = as_image_size(image_size)
    pairs = pair_boxes(cams, boxes, size)
    if not len(pairs):
        return PairRecords.empty()
    rows, cols = pair_peaks(cams, pairs, size, chunk_bytes)

    # The pixel of a box nearest to the point is the point clamped into the box: the union of the
    # boxes meets the disc when one box's nearest pixel lies inside it (integers, exact).
    row0, row1, col0, col1 = pairs.extents.unbind(1)
    r, c = rows[pairs.box_pair], cols[pairs.box_pair]
    nonempty = (row1 > row0) & (col1 > col0)
    dr = torch.minimum(torch.maximum(r, row0), row1 - 1) - r
    dc = torch.minimum(torch.maximum(c, col0), col1 - 1) - c
    inside = nonempty & (dr * dr + dc * dc < tolerance * tolerance)
    hits = torch.zeros(len(pairs), dtype=torch.long).index_add_(0, pairs.box_pair, inside.long())
    return records(pairs, (hits > 0).double(), union_areas(pairs, size), size)


def energy_pointing_game(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    chunk_bytes: int | None = None,
) -> PairRecords:
    """Score-CAM's energy-based pointing game (Wang et al. 2020): the map's share inside the boxes.

    Reference: haofanwang/Score-CAM, ``utils/energyPointGame.py`` (the ratio) and
    ``cam/scorecam.py`` (the maps it is fed).

    For every (image, class) pair with at least one box: the raw map ``cams[i, c]`` is up-sampled
    to ``image_size`` with ``F.interpolate(bilinear, align_corners=False)`` in float32 — Score-CAM
    forms its map at input resolution from activations up-sampled exactly so, and bilinear
    up-sampling is linear, so up-sampling the low-resolution map is the same map — then ReLU, then
    min-max (``(m - min) / (max - min)``, float32), as ``ScoreCAM.forward`` does. The value is
    ``sum(map inside the union of the class's boxes) / sum(map)``, each row summed in float32 and
    the rows in float64 (the reference sums in float32; the difference is rounding, ~1e-7). A map
    that is constant after the ReLU (all zero or negative, or flat: Score-CAM returns ``None``) is
    undefined: NaN, counted by ``reduce_records`` as ``undefined``. Boxes covering no pixel give
    0.

    The box is scored the right way round: rows ``y``, columns ``x``. The reference builds its
    box mask as ``empty[x1:x2, y1:y2]`` on an (H, W) map, i.e. transposed (on a square input it
    scores the box mirrored about the diagonal). Several boxes of a class count as their union
    (the reference takes one box). Box pixels as in :func:`pointing_game`.

    Args:
        cams: raw class maps (N, C, h, w), torch (any device) or numpy.
        boxes: N lists of ``(x, y, w, h, class_index)`` in pixels of ``image_size``.
        image_size: (H, W) of the network input.
        chunk_bytes: memory for one chunk of up-sampled maps.

    Returns:
        ``PairRecords`` (pairs ordered by image then class), ``value`` in [0, 1] or NaN.
    """
    cams = as_cams(cams)
    size = as_image_size(image_size)
    pairs = pair_boxes(cams, boxes, size)
    values, areas = [], []
    for _, _, up, gt in pair_maps(cams, pairs, size, chunk_bytes=chunk_bytes):
        up.relu_()
        low = up.amin(dim=(1, 2), keepdim=True)
        high = up.amax(dim=(1, 2), keepdim=True)
        flat = (high == low).flatten()
        norm = up.sub_(low).div_(high - low)  # NaN for flat maps: replaced below
        areas.append(_area(gt).cpu())
        total = _sum(norm)
        inside = _sum(gt.mul_(norm))
        value = torch.where(flat, torch.full_like(total, float("nan")), inside / total)
        values.append(value.cpu())
    if not values:
        return PairRecords.empty()
    return records(pairs, torch.cat(values), torch.cat(areas), size)


def _sum(maps: Tensor) -> Tensor:
    """Sum of each map of ``maps`` (p, H, W) float32: rows in float32, then float64 over rows
    (a float64 sum of every pixel costs a conversion pass; the rows' rounding is ~1e-7)."""
    return maps.sum(dim=2).sum(dim=1, dtype=torch.float64)


def _pair_name(keys: Tensor, num_classes: int):
    return lambda k: f"cams[{int(keys[k]) // num_classes}, {int(keys[k]) % num_classes}]"
