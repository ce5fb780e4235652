"""MaxBoxAcc and MaxBoxAccV2 (Choe et al., "Evaluating Weakly Supervised Object Localization
Methods Right", CVPR 2020), as computed by clovaai/wsolevaluation.

The reference, read from its code:

- ``inference.py`` (``CAMComputer.compute_and_evaluate_cams``): the class's raw map as float64
  (``util.t2n``) is resized to the input with ``cv2.resize(..., interpolation=cv2.INTER_CUBIC)``
  and min-max normalised (``normalize_scoremap``: a map holding NaN, or a constant map, becomes
  all zeros; else ``cam -= cam.min(); cam /= cam.max()``).
- ``evaluation.py`` (``compute_bboxes_from_scoremaps``): ``uint8(map * 255)`` (truncation); for each
  threshold ``t`` of the grid ``np.arange(0, 1, cam_curve_interval)`` the binary mask
  ``pixel > int(t * max(uint8 map))`` (``cv2.threshold`` with ``THRESH_BINARY``, strict);
  ``cv2.findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)``, so inner hole edges are contours too; no
  contour gives the box ``[0, 0, 0, 0]``. ``multi_contour_eval`` False (MaxBoxAcc) keeps the
  largest contour by ``cv2.contourArea`` (``max(..., key=...)``: the first on ties), True
  (MaxBoxAccV2) keeps all. A contour's ``cv2.boundingRect`` ``(x, y, w, h)`` gives the box
  ``[x, y, min(x + w, W - 1), min(y + h, H - 1)]``.
- ``evaluation.py`` (``calculate_multiple_iou``): inclusive-pixel IoU, area
  ``(x1 - x0 + 1) * (y1 - y0 + 1)``, 0 where the denominator is not positive;
  ``BoxEvaluator.accumulate``: per image and threshold the best IoU over all predicted boxes and
  all ground-truth boxes, correct if ``>= delta`` (``iou_threshold_list`` 30, 50, 70, divided by
  100); ``BoxEvaluator.compute``: per delta, the maximum over thresholds of the accuracy (so the
  best threshold may differ per delta). ``main.py``: MaxBoxAccV2 is the mean over the deltas with
  ``multi_contour_eval``; MaxBoxAcc the delta 0.5 figure without it. ``config.py``:
  ``cam_curve_interval`` 0.001 (1000 thresholds).

Here:

- Each (image, class) pair with at least one box of that class is one sample (the reference
  has one class per image; here images are multi-label). The pair's ground truth is all boxes of
  that class: ``x0 = int(x)``, ``y0 = int(y)``, ``x1 = int(x + w)``, ``y1 = int(y + h)``
  (truncation, as the reference's ``resize_bbox``), not clipped to the image (the reference's
  boxes are inside the image; one reaching the right edge has ``x1 = W`` while predicted boxes
  stop at ``W - 1``, as there).
- The map is resized to ``image_size`` = (H, W), i.e. ``dsize=(W, H)``; the reference passes
  ``images.shape[2:]`` = (H, W) as ``dsize`` (width first), the same for its square inputs.
- Accuracies are fractions in [0, 1] (the reference prints percentages).
- The default threshold grid is the paper's, ``np.arange(0, 1, 0.001)``: since the mask only
  depends on ``int(t * 255)``, it holds every cut level 0..254, and costs no more than a coarser
  grid (each distinct mask is traced once, see below).
- The threshold maximising accuracy on the evaluated set is an oracle choice (the paper's own
  protocol); ``box_accuracy(..., chosen_thresholds=...)`` applies thresholds chosen elsewhere
  (e.g. on a validation split with boxes), and the result says which (``oracle``).
- An infinite value in a scored map raises ``ValueError``; NaN makes the map all zeros, as in the
  reference.

Speed: the mask at threshold ``t`` is ``uint8 map > int(t * peak)``; two levels between the same
consecutive values present in the map give the same mask, so contours are traced once per
distinct mask (at most 255 per map, whatever the grid; the reference traces once per threshold),
which is exact. Each mask is cut from the rows and columns that reach its level (plus a zero
margin), traced with ``findContours(offset=...)``, and the boxes and areas of all its contours are
computed at once from their points (``boundingRect``'s extent, ``contourArea``'s shoelace sum,
exact for integer points). Pairs can be spread over threads (``workers``; OpenCV releases the GIL).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from torch import Tensor

from pylon.metrics.boxes import box_table, pixel_extents
from pylon.metrics.pairs import as_cams
from pylon.metrics.peaks import as_image_size
from pylon.metrics.records import PairRecords

DEFAULT_IOU_THRESHOLDS = (0.3, 0.5, 0.7)
# The paper's grid (clovaai/wsolevaluation config.py: cam_curve_interval = 0.001).
CAM_CURVE_INTERVAL = 0.001


def default_cam_thresholds() -> np.ndarray:
    """``np.arange(0, 1, 0.001)``: the reference's 1000 thresholds."""
    return np.arange(0, 1, CAM_CURVE_INTERVAL)


@dataclass
class BoxIoURecords:
    """Best IoU of each scored (image, class) pair at each cam threshold.

    ``iou`` (P, T) float64 is, for pair p and threshold ``cam_thresholds[t]``, the best IoU of the
    boxes estimated from the map (all contours with ``multi_contour``, else the largest) against
    the pair's ground-truth boxes. ``image_index``, ``class_index``, ``box_area`` (pixels of the
    union of the pair's boxes, as ``pylon.metrics.boxes.pixel_extents`` counts them) and
    ``image_area`` (H * W) are (P,) long, as in :class:`PairRecords`. Records of several batches
    or ranks combine with :meth:`cat` when ``image_index`` is global.
    """

    image_index: Tensor
    class_index: Tensor
    iou: Tensor
    box_area: Tensor
    image_area: Tensor
    cam_thresholds: Tensor
    multi_contour: bool

    def __post_init__(self) -> None:
        n = len(self.image_index)
        for name in ("class_index", "iou", "box_area", "image_area"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"BoxIoURecords.{name} has {len(getattr(self, name))} rows, not {n}"
                )
        if self.iou.ndim != 2 or self.iou.shape[1] != len(self.cam_thresholds):
            raise ValueError(
                f"BoxIoURecords.iou must be (P, {len(self.cam_thresholds)}), got "
                f"{tuple(self.iou.shape)}"
            )

    def __len__(self) -> int:
        return len(self.image_index)

    @classmethod
    def cat(cls, parts: Sequence[BoxIoURecords]) -> BoxIoURecords:
        """The records of several batches (or ranks) as one, in the order given; all parts must
        share the threshold grid and ``multi_contour``."""
        if not parts:
            raise ValueError("BoxIoURecords.cat needs at least one part (the grid comes from it)")
        first = parts[0]
        for p in parts[1:]:
            if p.multi_contour != first.multi_contour:
                raise ValueError("cannot concatenate records with different multi_contour")
            if not torch.equal(p.cam_thresholds, first.cam_thresholds):
                raise ValueError("cannot concatenate records with different cam thresholds")
        return cls(
            torch.cat([p.image_index for p in parts]),
            torch.cat([p.class_index for p in parts]),
            torch.cat([p.iou for p in parts]),
            torch.cat([p.box_area for p in parts]),
            torch.cat([p.image_area for p in parts]),
            first.cam_thresholds,
            first.multi_contour,
        )

    def select(self, keep: Tensor) -> BoxIoURecords:
        """The pairs where the boolean mask ``keep`` (P,) is true."""
        return BoxIoURecords(
            self.image_index[keep],
            self.class_index[keep],
            self.iou[keep],
            self.box_area[keep],
            self.image_area[keep],
            self.cam_thresholds,
            self.multi_contour,
        )


def _check_thresholds(cam_thresholds) -> np.ndarray:
    grid = default_cam_thresholds() if cam_thresholds is None else cam_thresholds
    if isinstance(grid, Tensor):
        grid = grid.detach().cpu().numpy()
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or len(grid) == 0:
        raise ValueError(f"cam_thresholds must be a non-empty 1-d sequence, got shape {grid.shape}")
    if not np.isfinite(grid).all() or (grid < 0).any() or (grid > 1).any():
        raise ValueError("cam_thresholds must lie in [0, 1]")
    return grid


def normalize_scoremap(cam: np.ndarray) -> np.ndarray:
    """The reference's ``normalize_scoremap`` (float64): zeros for a map holding NaN or a constant
    map, else ``(cam - min) / max(cam - min)``. ``cam`` is modified in place and returned."""
    if np.isnan(cam).any() or cam.min() == cam.max():
        cam[...] = 0
        return cam
    cam -= cam.min()
    cam /= cam.max()
    return cam


def scoremap_image(raw: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """The uint8 score map (H, W) the boxes are cut from: ``raw`` (h, w) as float64, OpenCV
    bicubic resize to ``image_size`` (H, W), :func:`normalize_scoremap`, ``uint8(map * 255)``."""
    height, width = image_size
    up = cv2.resize(
        np.ascontiguousarray(raw, dtype=np.float64), (width, height), interpolation=cv2.INTER_CUBIC
    )
    return (normalize_scoremap(up) * 255).astype(np.uint8)


def multiple_iou(box_a: np.ndarray, box_b: np.ndarray) -> np.ndarray:
    """Inclusive-pixel IoU (A, B) float64 of boxes ``box_a`` (A, 4) and ``box_b`` (B, 4), both
    ``[x0, y0, x1, y1]`` integers; 0 where the denominator is not positive (the reference's
    ``calculate_multiple_iou``)."""
    a = box_a[:, None, :].astype(np.int64)
    b = box_b[None, :, :].astype(np.int64)
    iw = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    ih = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    den = area_a + area_b - inter
    bad = den <= 0
    iou = inter / np.where(bad, 1, den)
    iou[bad] = 0.0
    return iou


def _boxes_and_areas(contours: list, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes ``[x0, y0, x1, y1]`` (K, 4) int64 and areas (K,) of ``contours`` at once: what
    ``cv2.boundingRect`` (the points' extent; ``x1 = min(x + w, W - 1)``) and
    ``cv2.contourArea`` (the shoelace formula, exact in float64 for integer points) give."""
    lengths = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    points = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.zeros(len(contours), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    x, y = points[:, 0], points[:, 1]
    boxes = np.stack(
        [
            np.minimum.reduceat(x, starts),
            np.minimum.reduceat(y, starts),
            np.minimum(np.maximum.reduceat(x, starts) + 1, width - 1),
            np.minimum(np.maximum.reduceat(y, starts) + 1, height - 1),
        ],
        axis=1,
    )
    following = np.arange(1, len(points) + 1)
    following[starts + lengths - 1] = starts  # each contour is closed
    cross = x * y[following] - x[following] * y
    areas = np.abs(np.add.reduceat(cross, starts)).astype(np.float64) / 2
    return boxes, areas


def _best_ious(
    image: np.ndarray, gt: np.ndarray, grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best IoU (T,) with all contours' boxes and with the largest contour's box, for the uint8
    score map ``image`` (H, W), ground truth ``gt`` (B, 4) and thresholds ``grid`` (T,)."""
    peak = int(image.max())
    levels = np.trunc(grid * float(peak))  # int(t * max(uint8 map)), t >= 0
    # The mask at level L is image > L = image >= the smallest present value above L: levels
    # between the same present values give the same mask. key == len(present): empty mask.
    present = np.flatnonzero(np.bincount(image.ravel(), minlength=256))
    keys = np.searchsorted(present, levels, side="right")
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    inverse = inverse.reshape(-1)
    traced = unique_keys[unique_keys < len(present)]
    values = present[traced]
    height, width = image.shape
    # Rows and columns holding a pixel >= v are those whose maximum is >= v: the mask's extent,
    # so that each mask is cut and traced on its bounding region plus a zero margin only.
    rows = image.max(axis=1)[None, :] >= values[:, None]
    cols = image.max(axis=0)[None, :] >= values[:, None]
    y0 = np.maximum(rows.argmax(axis=1) - 1, 0).tolist()
    y1 = np.minimum(height - rows[:, ::-1].argmax(axis=1) + 1, height).tolist()
    x0 = np.maximum(cols.argmax(axis=1) - 1, 0).tolist()
    x1 = np.minimum(width - cols[:, ::-1].argmax(axis=1) + 1, width).tolist()
    contours, counts = [], []
    for k, value in enumerate(values.tolist()):
        _, mask = cv2.threshold(
            image[y0[k] : y1[k], x0[k] : x1[k]], value - 1, 1, cv2.THRESH_BINARY
        )
        found, _ = cv2.findContours(
            mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, offset=(x0[k], y0[k])
        )
        contours.extend(found)
        counts.append(len(found))
    # A mask without contours (the empty mask) gives the box [0, 0, 0, 0] of area 0.
    counts = np.asarray(counts + [0] * (len(unique_keys) - len(traced)), dtype=np.int64)
    empty = counts == 0
    if contours:
        boxes, areas = _boxes_and_areas(contours, height, width)
    else:
        boxes, areas = np.zeros((0, 4), dtype=np.int64), np.zeros(0)
    sizes = np.where(empty, 1, counts)
    starts = np.zeros(len(sizes), dtype=np.int64)
    np.cumsum(sizes[:-1], out=starts[1:])
    if empty.any():
        at = np.flatnonzero(empty)
        # Insert one zero box (area 0) where each contour-less mask's boxes start.
        boxes = np.insert(boxes, starts[at] - np.arange(len(at)), 0, axis=0)
        areas = np.insert(areas, starts[at] - np.arange(len(at)), 0.0)
    best = multiple_iou(boxes, gt).max(axis=1)
    best_all = np.maximum.reduceat(best, starts)
    # The largest contour of each mask: the first maximum of its areas, as Python's max.
    peak_area = np.repeat(np.maximum.reduceat(areas, starts), sizes)
    at_peak = np.flatnonzero(areas == peak_area)
    largest = at_peak[np.searchsorted(at_peak, starts)]
    best_largest = best[largest]
    return best_all[inverse], best_largest[inverse]


def _gt_boxes(xywh: Tensor) -> np.ndarray:
    """Ground-truth ``[x0, y0, x1, y1]`` (B, 4) int64 of ``xywh`` (B, 4) float64: ``int(x)``,
    ``int(y)``, ``int(x + w)``, ``int(y + h)``."""
    x, y, w, h = xywh.double().unbind(1)
    return torch.stack([x, y, x + w, y + h], dim=1).trunc().long().numpy()


def box_iou_records_both(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    cam_thresholds=None,
    workers: int = 1,
    image_offset: int = 0,
) -> tuple[BoxIoURecords, BoxIoURecords]:
    """:func:`box_iou_records` for the largest contour and for all contours at once (the
    contours are traced once): ``(largest, all)``, i.e. the MaxBoxAcc and MaxBoxAccV2 records."""
    cams = as_cams(cams)
    size = as_image_size(image_size)
    grid = _check_thresholds(cam_thresholds)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    num_images, num_classes = cams.shape[:2]
    table = box_table(boxes, num_images, num_classes, size)
    keys, box_pair = torch.unique(table.image * num_classes + table.cls, return_inverse=True)
    order = torch.argsort(box_pair, stable=True)
    box_pair, xywh = box_pair[order], table.xywh[order]
    first_of_pair = torch.searchsorted(box_pair, torch.arange(len(keys) + 1)).tolist()
    gt = _gt_boxes(xywh)
    extents = pixel_extents(xywh, size).numpy()

    maps = cams.flatten(0, 1).index_select(0, keys.to(cams.device)).double().cpu().numpy()
    infinite = np.isinf(maps).any(axis=(1, 2))
    if infinite.any():
        k = int(keys[int(np.flatnonzero(infinite)[0])])
        raise ValueError(f"cams[{k // num_classes}, {k % num_classes}] contains infinite values")

    def score(p: int) -> tuple[np.ndarray, np.ndarray, int]:
        lo, hi = first_of_pair[p], first_of_pair[p + 1]
        image = scoremap_image(maps[p], size)
        best_all, best_largest = _best_ious(image, gt[lo:hi], grid)
        canvas = np.zeros(size, dtype=bool)
        for r0, r1, c0, c1 in extents[lo:hi]:
            canvas[r0:r1, c0:c1] = True
        return best_largest, best_all, int(canvas.sum())

    if workers == 1 or len(keys) < 2:
        results = [score(p) for p in range(len(keys))]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(score, range(len(keys))))

    num_thresholds = len(grid)
    if results:
        largest = torch.from_numpy(np.stack([r[0] for r in results]))
        every = torch.from_numpy(np.stack([r[1] for r in results]))
    else:
        largest = every = torch.zeros(0, num_thresholds, dtype=torch.float64)
    box_area = torch.tensor([r[2] for r in results], dtype=torch.long)
    image_area = torch.full((len(keys),), size[0] * size[1], dtype=torch.long)
    grid_t = torch.from_numpy(grid.copy())
    image_index, class_index = keys // num_classes + int(image_offset), keys % num_classes
    return (
        BoxIoURecords(image_index, class_index, largest, box_area, image_area, grid_t, False),
        BoxIoURecords(image_index, class_index, every, box_area, image_area, grid_t, True),
    )


def box_iou_records(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    cam_thresholds=None,
    multi_contour: bool = True,
    workers: int = 1,
    image_offset: int = 0,
) -> BoxIoURecords:
    """Best IoU of every (image, class) pair with boxes at every cam threshold.

    Args:
        cams: raw class maps (N, C, h, w), torch (any device) or numpy; only maps of pairs with
            boxes are read (as float64).
        boxes: N lists of ``(x, y, w, h, class_index)`` in input pixels
            (``pylon.metrics.boxes.box_table`` validates them).
        image_size: (H, W) of the network input.
        cam_thresholds: the threshold grid, values in [0, 1] (default the paper's
            ``np.arange(0, 1, 0.001)``).
        multi_contour: boxes of all contours (MaxBoxAccV2) or of the largest one (MaxBoxAcc).
        workers: threads scoring pairs in parallel.
        image_offset: added to ``image_index`` (the images of earlier batches), so that records
            of several batches join with :meth:`BoxIoURecords.cat`.

    Returns:
        :class:`BoxIoURecords`, pairs ordered by image then class.
    """
    largest, every = box_iou_records_both(
        cams,
        boxes,
        image_size,
        cam_thresholds=cam_thresholds,
        workers=workers,
        image_offset=image_offset,
    )
    return every if multi_contour else largest


@dataclass
class BoxAccuracy:
    """Box accuracy per IoU level over the cam-threshold grid.

    ``curves`` (L, T): accuracy at each threshold per IoU level; ``accuracy`` (L,): the figure,
    i.e. the curve's maximum when ``oracle`` (the threshold chosen on the evaluated set itself)
    or its value at thresholds chosen elsewhere; ``threshold_index`` / ``threshold`` (L,): the
    threshold used (the first maximum when ``oracle``); ``mean``: the mean of ``accuracy`` over the
    IoU levels (MaxBoxAccV2 with ``multi_contour`` and levels 0.3, 0.5, 0.7; MaxBoxAcc is
    ``accuracy`` at 0.5 without ``multi_contour``); ``n``: scored pairs. Fractions in [0, 1].
    """

    iou_thresholds: tuple[float, ...]
    cam_thresholds: Tensor
    curves: Tensor
    accuracy: Tensor
    threshold_index: Tensor
    threshold: Tensor
    mean: float
    oracle: bool
    multi_contour: bool
    n: int
    records: BoxIoURecords | None = field(default=None, repr=False)

    def at(self, iou: float) -> float:
        """The figure at IoU level ``iou``."""
        return float(self.accuracy[_level_index(self.iou_thresholds, iou)])

    def as_dict(self) -> dict[str, object]:
        """Flat figures: ``boxacc_iou{d}`` and ``threshold_iou{d}`` per level, ``boxacc_mean``,
        ``oracle``, ``multi_contour``, ``n``."""
        out: dict[str, object] = {}
        for k, d in enumerate(self.iou_thresholds):
            out[f"boxacc_iou{d:g}"] = float(self.accuracy[k])
            out[f"threshold_iou{d:g}"] = float(self.threshold[k])
        out["boxacc_mean"] = self.mean
        out["oracle"] = self.oracle
        out["multi_contour"] = self.multi_contour
        out["n"] = self.n
        return out


def _level_index(levels: Sequence[float], iou: float) -> int:
    for k, d in enumerate(levels):
        if d == iou:
            return k
    raise ValueError(f"IoU level {iou} is not one of {tuple(levels)}")


def _check_iou_levels(iou_thresholds) -> tuple[float, ...]:
    levels = tuple(float(d) for d in iou_thresholds)
    if not levels or any(not 0 <= d <= 1 for d in levels):
        raise ValueError(f"iou_thresholds must be a non-empty sequence in [0, 1], got {levels}")
    return levels


def threshold_indices(cam_thresholds: Tensor, chosen, num_levels: int) -> Tensor:
    """Grid indices (L,) of thresholds ``chosen``: one value for all IoU levels, one per level,
    or a :class:`BoxAccuracy` (its ``threshold``). Each must be on the grid (within 1e-9)."""
    if isinstance(chosen, BoxAccuracy):
        chosen = chosen.threshold.tolist()
    values = np.atleast_1d(np.asarray(chosen, dtype=np.float64))
    if values.ndim != 1 or len(values) not in (1, num_levels):
        raise ValueError(
            f"chosen_thresholds must be one value or {num_levels} (one per IoU level), "
            f"got {chosen!r}"
        )
    values = np.broadcast_to(values, (num_levels,))
    grid = cam_thresholds.numpy()
    indices = []
    for v in values:
        k = int(np.argmin(np.abs(grid - v)))
        if not abs(grid[k] - v) <= 1e-9:
            raise ValueError(
                f"chosen threshold {v} is not on the cam-threshold grid; score the records on "
                "the grid the thresholds were chosen on"
            )
        indices.append(k)
    return torch.tensor(indices, dtype=torch.long)


def box_accuracy(
    records: BoxIoURecords,
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    *,
    chosen_thresholds=None,
) -> BoxAccuracy:
    """Accuracy curves, their maxima and the thresholds chosen, per IoU level.

    Args:
        records: the scored pairs (each pair one sample).
        iou_thresholds: the IoU levels ``delta`` (a pair is correct when IoU ``>= delta``).
        chosen_thresholds: ``None``: per level the threshold maximising the accuracy on these
            records (the first maximum; an oracle choice, as the reference's figures). Else
            thresholds chosen elsewhere (e.g. a validation split's :class:`BoxAccuracy`, one
            value, or one per level), which must lie on the records' grid.

    Returns:
        :class:`BoxAccuracy`. With no pairs the figures are NaN, ``threshold_index`` -1.
    """
    levels = _check_iou_levels(iou_thresholds)
    n = len(records)
    delta = torch.tensor(levels, dtype=torch.float64)
    hits = torch.stack([(records.iou >= d).sum(dim=0) for d in delta])  # (L, T) long
    curves = hits.double() / n if n else torch.full(hits.shape, math.nan, dtype=torch.float64)
    if chosen_thresholds is None:
        # argmax over integer counts: exact, the first maximum.
        index = hits.argmax(dim=1) if n else torch.full((len(levels),), -1, dtype=torch.long)
    else:
        index = threshold_indices(records.cam_thresholds, chosen_thresholds, len(levels))
    if n:
        accuracy = curves.gather(1, index[:, None])[:, 0]
        threshold = records.cam_thresholds[index]
    else:
        accuracy = torch.full((len(levels),), math.nan, dtype=torch.float64)
        threshold = accuracy.clone()
    return BoxAccuracy(
        iou_thresholds=levels,
        cam_thresholds=records.cam_thresholds,
        curves=curves,
        accuracy=accuracy,
        threshold_index=index,
        threshold=threshold,
        mean=float(accuracy.mean()),
        oracle=chosen_thresholds is None,
        multi_contour=records.multi_contour,
        n=n,
        records=records,
    )


def records_at(records: BoxIoURecords, threshold_index: int, iou: float) -> PairRecords:
    """0/1 hits per pair (IoU ``>= iou`` at grid threshold ``threshold_index``) as
    :class:`PairRecords`, for per-class figures, size buckets or bootstrap intervals at a fixed
    threshold (e.g. one chosen on a validation split)."""
    k = int(threshold_index)
    if not -len(records.cam_thresholds) <= k < len(records.cam_thresholds):
        raise ValueError(
            f"threshold_index {k} is outside the grid of {len(records.cam_thresholds)} thresholds"
        )
    hit = (records.iou[:, k] >= float(iou)).double()
    return PairRecords(
        records.image_index.clone(),
        records.class_index.clone(),
        hit,
        records.box_area.clone(),
        records.image_area.clone(),
    )


def max_box_acc(
    cams,
    boxes: Sequence[Sequence],
    image_size: tuple[int, int],
    *,
    cam_thresholds=None,
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    multi_contour: bool = True,
    chosen_thresholds=None,
    workers: int = 1,
) -> BoxAccuracy:
    """MaxBoxAccV2 (``multi_contour=True``: ``mean`` over the IoU levels) or MaxBoxAcc
    (``multi_contour=False``: ``at(0.5)``) of ``cams`` against ``boxes``.

    :func:`box_iou_records` then :func:`box_accuracy` (see there for the arguments). Without
    ``chosen_thresholds`` the threshold is chosen on these maps (``oracle`` is True), as in the
    reference; pass the thresholds chosen on a validation split to report a test split fairly.
    """
    records = box_iou_records(
        cams,
        boxes,
        image_size,
        cam_thresholds=cam_thresholds,
        multi_contour=multi_contour,
        workers=workers,
    )
    return box_accuracy(records, iou_thresholds, chosen_thresholds=chosen_thresholds)
