"""CheXlocalize's hit rate, segmentation IoU and threshold tuning (Saporta et al. 2022).

Reference: rajpurkarlab/cheXlocalize, ``eval.py`` (``create_map``, ``get_hitrates``,
``calculate_iou``, ``get_ious``), ``heatmap_to_segmentation.py`` (``cam_to_segmentation``,
``pkl_to_mask``) and ``tune_heatmap_threshold.py`` (``compute_miou``, ``tune_threshold``).

Their ground truth is a radiologist's segmentation; here it is the union of the pair's boxes, a box
``(x, y, w, h)`` covering rows ``int(y) .. int(y)+int(h)-1`` and columns
``int(x) .. int(x)+int(w)-1`` clipped to the image (``pylon.metrics.boxes.pixel_extents``). Maps
are the raw class maps ``cams[i, c]`` (no sigmoid), up-sampled to the input with
``F.interpolate(bilinear, align_corners=False)`` in float32, as their ``create_map`` /
``pkl_to_mask`` do to the original image size; a chunk of pairs at a time
(``pylon.metrics.pointing.pair_maps``). The segmentation's contour work is per pair (OpenCV and
Pillow on the CPU, as theirs).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from pylon.metrics.pairs import as_cams
from pylon.metrics.peaks import as_image_size
from pylon.metrics.pointing import (
    _area,
    inside_boxes,
    pair_boxes,
    pair_maps,
    pair_peaks,
    records,
    union_areas,
)
from pylon.metrics.records import PairRecords, reduce_records

# Their tuning grid: np.arange(0.2, 0.8, 0.1), seven values 0.2 .. 0.8 (0.8000000000000003).
DEFAULT_GRID = np.arange(0.2, 0.8, 0.1)

# Up-sampled map, ground-truth mask, segmentation and a temporary, 4 bytes each.
_BYTES_PER_PIXEL = 16


def hit_rate(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    chunk_bytes: int | None = None,
) -> PairRecords:
    """CheXlocalize's hit rate: is the map's maximum in the ground truth? 1.0 / 0.0 per pair.

    Reference: rajpurkarlab/cheXlocalize ``eval.py`` (``get_hitrates`` on ``create_map``'s map).

    For every (image, class) pair with at least one box (their positive pairs): the raw map,
    up-sampled bilinearly (``align_corners=False``, float32) to ``image_size``; its point is
    ``np.argmax`` of the map, the first maximum in row-major order; a hit when that pixel lies in
    the union of the class's boxes. No tolerance (unlike
    :func:`pylon.metrics.pointing.pointing_game`).
    A pair whose boxes cover no pixel is NaN (their empty mask), counted as ``undefined``.

    One later revision of their ``eval.py`` takes the arg-max of ``pkl_to_mask``'s binary
    segmentation instead of the map (its first segmented pixel); this follows the map version,
    the hit rate their paper and README describe (the most salient pixel).

    Args:
        cams: raw class maps (N, C, h, w), torch (any device) or numpy.
        boxes: N lists of ``(x, y, w, h, class_index)`` in pixels of ``image_size``.
        image_size: (H, W) of the network input.
        chunk_bytes: memory for one chunk of up-sampled maps.

    Returns:
        ``PairRecords`` (pairs ordered by image then class).
    """
    cams = as_cams(cams)
    size = as_image_size(image_size)
    pairs = pair_boxes(cams, boxes, size)
    if not len(pairs):
        return PairRecords.empty()
    hit = inside_boxes(pairs, *pair_peaks(cams, pairs, size, chunk_bytes)).double()
    area = union_areas(pairs, size)
    return records(pairs, torch.where(area > 0, hit, math.nan), area, size)


def otsu_segmentation(quantised: np.ndarray) -> np.ndarray:
    """Their Otsu segmentation of one map quantised to ``uint8`` (H, W): a bool (H, W) mask.

    As ``cam_to_segmentation`` (rajpurkarlab/cheXlocalize ``heatmap_to_segmentation.py``) with no
    threshold: ``cv2.threshold(q, 0, q.max(), THRESH_OTSU)`` (pixels above Otsu's threshold), then
    ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)`` — every contour, the edges of holes too —
    and each contour of more than one point drawn filled with its outline by Pillow's
    ``ImageDraw.polygon`` on a 1-bit image. So holes are filled and isolated pixels (one-point
    contours) are dropped.
    """
    q = np.ascontiguousarray(quantised, dtype=np.uint8)
    height, width = q.shape
    binary = cv2.threshold(q, 0, int(q.max()), cv2.THRESH_OTSU)[1]
    contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    canvas = Image.new("1", (width, height))
    draw = ImageDraw.Draw(canvas)
    for contour in contours:
        if len(contour) > 1:
            draw.polygon([tuple(p) for p in contour[:, 0, :].tolist()], outline=1, fill=1)
    return np.array(canvas, dtype=bool)


def _minmax(up: Tensor) -> tuple[Tensor, Tensor]:
    """``(up - min) / max(up - min)`` per map of ``up`` (p, H, W) in float32, as theirs (in
    place), and which maps are flat (p,) bool (their values are NaN: empty segmentations)."""
    up.sub_(up.amin(dim=(1, 2), keepdim=True))
    top = up.amax(dim=(1, 2), keepdim=True)
    return up.div_(top), (top == 0).flatten()


def threshold_cut(t: float) -> float:
    """The float32 their ``mask > threshold`` compares a float32 map with: ``t`` rounded to the
    nearest float32.

    Their pinned NumPy (1.23, ``requirements.txt``) casts a float64 scalar to the float32 array's
    type (value-based casting), so a pixel ``m`` is kept when ``m > float32(t)``. NumPy 2 compares
    in float64 (``m > t``); the two differ only for pixels equal to ``float32(t)`` when that
    rounds above ``t`` (e.g. ``m = float32(0.3)`` against ``t = 0.3``).
    """
    return float(np.float32(t))


def _segment(up: Tensor, cut: Tensor | None) -> Tensor:
    """Segmentations (p, H, W) bool of the up-sampled maps ``up`` (overwritten): Otsu when
    ``cut`` is None, else ``m > cut`` with ``cut`` (p,) float32 from :func:`threshold_cut`."""
    m, flat = _minmax(up)
    if cut is not None:
        return m > cut[:, None, None]  # NaN (flat maps) is never above
    quantised = (m.nan_to_num_(0.0).mul_(255)).to(torch.uint8).cpu().numpy()
    seg = np.zeros(quantised.shape, dtype=bool)
    for k in range(len(quantised)):
        if not bool(flat[k]):
            seg[k] = otsu_segmentation(quantised[k])
    return torch.from_numpy(seg).to(up.device)


def _thresholds(threshold, pairs, num_classes: int) -> Tensor | None:
    """Per-class cuts (C,) float32 (see :func:`threshold_cut`), or None for Otsu."""
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(
                f"threshold must be 'otsu', a number or {{class: number}}, got {threshold!r}"
            )
        return None
    if isinstance(threshold, Mapping):
        needed = sorted(set((pairs.keys % num_classes).tolist()))
        missing = [c for c in needed if c not in threshold]
        if missing:
            raise ValueError(
                f"threshold has no value for class(es) {missing}, which have pairs to score"
            )
        per_class = [threshold.get(c, 0.5) for c in range(num_classes)]
    else:
        per_class = [threshold] * num_classes
    for t in per_class:
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not math.isfinite(t):
            raise ValueError(f"thresholds must be finite numbers, got {t!r}")
    return torch.tensor([threshold_cut(float(t)) for t in per_class], dtype=torch.float32)


def _as_labels(labels, num_images: int, num_classes: int) -> Tensor:
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, Tensor) or tuple(labels.shape) != (num_images, num_classes):
        raise ValueError(
            f"labels must be an (N, C) = ({num_images}, {num_classes}) array of 0/1, got "
            f"{getattr(labels, 'shape', type(labels).__name__)}"
        )
    labels = labels.detach().cpu()
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must hold only 0 and 1")
    return labels.bool()


def segmentation_iou(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    threshold: str | float | Mapping[int, float] = "otsu",
    true_positive_only: bool = True,
    labels=None,
    chunk_bytes: int | None = None,
) -> PairRecords:
    """CheXlocalize's IoU of the map's segmentation with the ground truth, one value per pair.

    Reference: rajpurkarlab/cheXlocalize ``heatmap_to_segmentation.py``
    (``cam_to_segmentation``) and ``eval.py`` (``calculate_iou``, ``get_ious``); their mIoU is
    the per-class mean of the defined values (``reduce_records``' ``per_class``).

    Segmentation of a map up-sampled bilinearly (``align_corners=False``) to ``image_size``:
    min-max in float32, ``m = (up - min) / max(up - min)`` (a constant map gives an empty
    segmentation); then

    - ``threshold="otsu"`` (their default): :func:`otsu_segmentation` of ``uint8(255 * m)``
      (truncation): Otsu's threshold, contours, filled (holes filled, isolated pixels dropped);
    - a number ``t``, or ``{class_index: t}`` (e.g. from :func:`tune_segmentation_threshold`):
      ``m > float32(t)``, as their ``mask > threshold`` under their pinned NumPy 1.23
      (:func:`threshold_cut`); no contour step (theirs has none on this path).

    IoU = ``|seg & gt| / |seg | gt|``. ``true_positive_only=True`` (their default): only pairs
    with at least one box are scored, and a pair is NaN (counted as ``undefined``) unless both the
    segmentation and the ground truth are non-empty. ``true_positive_only=False``: negative pairs
    are scored too (ground truth empty, so IoU 0 for any segmentation) and a pair is NaN only when
    both masks are empty. Which pairs are negative:

    - ``labels=None``: every pair without a box (CheXlocalize's convention: every positive has a
      segmentation), so all N x C pairs are scored;
    - ``labels`` (N, C) 0/1: the pairs labelled 0; a pair labelled 1 without boxes (ground truth
      unknown, e.g. NIH positives outside the box subset) is not scored. A box on a pair labelled
      0 raises ``ValueError``.

    Args:
        cams: raw class maps (N, C, h, w), torch (any device) or numpy.
        boxes: N lists of ``(x, y, w, h, class_index)`` in pixels of ``image_size``.
        image_size: (H, W) of the network input.
        threshold: ``"otsu"``, a number, or a mapping class index -> number (every class with
            pairs to score must be present).
        true_positive_only: their ``true_pos_only``.
        labels: optional (N, C) 0/1 labels, torch or numpy; see above.
        chunk_bytes: memory for one chunk of up-sampled maps.

    Returns:
        ``PairRecords`` (pairs ordered by image then class).
    """
    cams = as_cams(cams)
    size = as_image_size(image_size)
    num_images, num_classes = cams.shape[:2]
    extra = None
    if labels is not None:
        labels = _as_labels(labels, num_images, num_classes)
    if not true_positive_only:
        negative = torch.ones(num_images, num_classes, dtype=torch.bool)
        if labels is not None:
            negative = ~labels
        extra = negative.flatten().nonzero().flatten()
    pairs = pair_boxes(cams, boxes, size, extra_keys=extra)
    if labels is not None:
        box_keys = pairs.keys[pairs.box_pair]
        bad = ~labels.flatten()[box_keys]
        if bool(bad.any()):
            key = int(box_keys[bad][0])
            raise ValueError(
                f"boxes of image {key // num_classes}, class {key % num_classes}: the pair is "
                "labelled 0 in labels"
            )
    cuts = _thresholds(threshold, pairs, num_classes)
    pair_cls = pairs.keys % num_classes
    values, areas = [], []
    for start, stop, up, gt in pair_maps(
        cams, pairs, size, bytes_per_pixel=_BYTES_PER_PIXEL, chunk_bytes=chunk_bytes
    ):
        cut = None if cuts is None else cuts[pair_cls[start:stop]].to(up.device)
        seg = _segment(up, cut)
        gt_area = _area(gt)
        seg_area = seg.sum(dim=(1, 2))
        inter = _area(gt.mul_(seg))
        values.append(_iou(inter, seg_area, gt_area, true_positive_only).cpu())
        areas.append(gt_area.cpu())
    if not values:
        return PairRecords.empty()
    return records(pairs, torch.cat(values), torch.cat(areas), size)


def _iou(inter: Tensor, seg_area: Tensor, gt_area: Tensor, true_positive_only: bool) -> Tensor:
    """Their ``calculate_iou`` from pixel counts, float64, NaN where undefined."""
    union = (seg_area + gt_area - inter).double()
    iou = inter.double() / union.clamp(min=1)
    if true_positive_only:
        undefined = (seg_area == 0) | (gt_area == 0)
    else:
        undefined = union == 0
    return torch.where(undefined, math.nan, iou)


def tune_segmentation_threshold(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    grid=DEFAULT_GRID,
    *,
    chunk_bytes: int | None = None,
) -> dict[int, float]:
    """CheXlocalize's per-class segmentation threshold: the grid value of best mIoU.

    Reference: rajpurkarlab/cheXlocalize ``tune_heatmap_threshold.py`` (``compute_miou``,
    ``tune_threshold``). Run it on a validation split and pass the result to
    :func:`segmentation_iou` (``threshold=...``) on the test split; tuned on the evaluated split
    itself the figure is optimistic.

    For each threshold ``t`` of ``grid`` (theirs: ``np.arange(0.2, 0.8, 0.1)``, seven values) the
    maps of the pairs with boxes are segmented as ``m > t`` (see :func:`segmentation_iou`) and
    each class's mIoU is the mean of its defined true-positive-only IoUs (their ``np.nanmean``);
    each class gets the first ``t`` of largest mIoU. Thresholds whose mIoU is NaN (no defined pair)
    are passed over, and a class with no defined pair at any threshold is left out of the result
    (theirs would return the first grid value). The values are the grid's own floats; theirs are
    saved rounded to one decimal, which segments identically (both round to the same float32,
    :func:`threshold_cut`).

    Args:
        cams: raw class maps (N, C, h, w), torch (any device) or numpy.
        boxes: N lists of ``(x, y, w, h, class_index)`` in pixels of ``image_size``.
        image_size: (H, W) of the network input.
        grid: thresholds to try, finite numbers.
        chunk_bytes: memory for one chunk of up-sampled maps.

    Returns:
        ``{class_index: threshold}`` for the classes with a defined mIoU.
    """
    grid = [float(t) for t in np.asarray(grid, dtype=np.float64).reshape(-1)]
    if not grid or not all(math.isfinite(t) for t in grid):
        raise ValueError(f"grid must hold finite thresholds, got {grid!r}")
    cams = as_cams(cams)
    size = as_image_size(image_size)
    num_classes = cams.shape[1]
    pairs = pair_boxes(cams, boxes, size)
    cuts = [threshold_cut(t) for t in grid]
    ious = []  # per chunk: (p, len(grid))
    for _, _, up, gt in pair_maps(
        cams, pairs, size, bytes_per_pixel=_BYTES_PER_PIXEL, chunk_bytes=chunk_bytes
    ):
        m, _ = _minmax(up)
        gt_area = _area(gt)
        columns = []
        for cut in cuts:
            seg = m > cut
            inter = _area(gt * seg)
            columns.append(_iou(inter, seg.sum(dim=(1, 2)), gt_area, True).cpu())
        ious.append(torch.stack(columns, dim=1))
    if not ious:
        return {}
    table = torch.cat(ious)
    cls = pairs.keys % num_classes
    empty = torch.zeros(len(pairs), dtype=torch.long)
    miou = torch.stack(
        [
            reduce_records(PairRecords(empty, cls, table[:, j], empty, empty), num_classes)[
                "per_class"
            ]
            for j in range(len(grid))
        ],
        dim=1,
    )  # (C, len(grid))
    best = {}
    for c in range(num_classes):
        row = miou[c]
        defined = ~torch.isnan(row)
        if bool(defined.any()):
            top = row[defined].max()
            best[c] = grid[int((defined & (row == top)).nonzero()[0, 0])]
    return best
