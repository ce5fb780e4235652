"""CheXlocalize hit rate, segmentation IoU and threshold tuning against loops written here.

The definitions (shared/benchmark-metrics.md; rajpurkarlab/cheXlocalize ``eval.py``,
``heatmap_to_segmentation.py``, ``tune_heatmap_threshold.py``): the raw map up-sampled with one
``F.interpolate(bilinear, align_corners=False)`` call (their ``create_map``); hit = the flat
arg-max lies in the ground truth; segmentation = min-max in float32, then Otsu's threshold on
``uint8(255 m)`` with holes filled and isolated pixels dropped (what their contours drawn filled
amount to; written here as a flood fill, independent of OpenCV and Pillow), or ``m > t`` with
``t`` as float32 (their NumPy 1.23); IoU NaN per their ``calculate_iou``. A box covers rows
``int(y) .. int(y)+int(h)-1`` and columns ``int(x) .. int(x)+int(w)-1`` clipped to the image.
"""

import math
from collections import deque

import cv2
import numpy as np
import pytest
import torch
from naive_maps import assert_same, box_mask, interp

from pylon.metrics.chexlocalize import (
    DEFAULT_GRID,
    hit_rate,
    otsu_segmentation,
    segmentation_iou,
    threshold_cut,
    tune_segmentation_threshold,
)
from pylon.metrics.records import reduce_records

SIZES = [((7, 9), (30, 40)), ((16, 12), (64, 48)), ((5, 11), (23, 17)), ((20, 24), (20, 24))]


def random_boxes(rng, num_images, num_classes, height, width):
    boxes = []
    for _ in range(num_images):
        image_boxes = []
        for _ in range(int(rng.integers(0, 4))):
            x = float(rng.uniform(-0.2 * width, width - 1))
            y = float(rng.uniform(-0.2 * height, height - 1))
            w = max(float(rng.uniform(0, 0.7 * width)), -x)
            h = max(float(rng.uniform(0, 0.7 * height)), -y)
            if rng.random() < 0.05 and x >= 0:
                w = 0.0
            image_boxes.append((x, y, w, h, int(rng.integers(0, num_classes))))
        boxes.append(image_boxes)
    return boxes


def naive_otsu(q: np.ndarray) -> int:
    """Otsu's threshold k of a uint8 image: the first k maximising the between-class variance
    of {q <= k} and {q > k} (float64)."""
    hist = [0] * 256
    for v in q.flatten().tolist():
        hist[v] += 1
    n = q.size
    best, best_k = -1.0, 0
    for k in range(256):
        n0 = sum(hist[: k + 1])
        w0, w1 = n0 / n, (n - n0) / n
        if min(w0, w1) < np.finfo(np.float32).eps:
            continue
        mu0 = sum(i * hist[i] for i in range(k + 1)) / n0
        mu1 = sum(i * hist[i] for i in range(k + 1, 256)) / (n - n0)
        sigma = w0 * w1 * (mu0 - mu1) ** 2
        if sigma > best:
            best, best_k = sigma, k
    return best_k


def naive_fill(binary: np.ndarray) -> np.ndarray:
    """Drop pixels with no 8-neighbour, then fill holes (background not 4-connected to the
    border), pixel by pixel."""
    height, width = binary.shape
    kept = binary.copy()
    for r in range(height):
        for c in range(width):
            if binary[r, c] and not any(
                binary[rr, cc]
                for rr in range(max(r - 1, 0), min(r + 2, height))
                for cc in range(max(c - 1, 0), min(c + 2, width))
                if (rr, cc) != (r, c)
            ):
                kept[r, c] = False
    outside = np.zeros_like(kept)
    queue = deque(
        (r, c)
        for r in range(height)
        for c in range(width)
        if (r in (0, height - 1) or c in (0, width - 1)) and not kept[r, c]
    )
    for r, c in queue:
        outside[r, c] = True
    while queue:
        r, c = queue.popleft()
        for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
            if 0 <= rr < height and 0 <= cc < width and not kept[rr, cc] and not outside[rr, cc]:
                outside[rr, cc] = True
                queue.append((rr, cc))
    return ~outside


def naive_segment(up: np.ndarray, threshold) -> np.ndarray:
    """Their cam_to_segmentation, step by step: float32 min-max, then Otsu or ``m > t``."""
    t = torch.from_numpy(up)
    mask = t - t.min()
    if float(mask.max()) == 0.0:
        return np.zeros(up.shape, dtype=bool)  # constant map
    m = mask.div(mask.max()).numpy()
    if threshold == "otsu":
        q = np.uint8(255 * m)
        return naive_fill(q > naive_otsu(q))
    return m > np.float32(threshold)


def naive_iou(seg, gt, true_positive_only):
    inter = union = seg_area = gt_area = 0
    for s, g in zip(seg.flatten().tolist(), gt.flatten().tolist(), strict=True):
        inter += s and g
        union += s or g
        seg_area += s
        gt_area += g
    if true_positive_only:
        return math.nan if seg_area == 0 or gt_area == 0 else inter / union
    return math.nan if union == 0 else inter / union


def pairs_of(boxes, num_classes, everything=False, labels=None):
    """(image, class, boxes): pairs with boxes; with ``everything`` all pairs (or, given labels,
    pairs with boxes and pairs labelled 0)."""
    for i, image_boxes in enumerate(boxes):
        for c in range(num_classes):
            cls_boxes = [b for b in image_boxes if b[4] == c]
            if cls_boxes or (everything and (labels is None or labels[i, c] == 0)):
                yield i, c, cls_boxes


def naive_seg_iou(cams, boxes, size, threshold, true_positive_only=True, labels=None):
    out = []
    for i, c, cls_boxes in pairs_of(boxes, cams.shape[1], not true_positive_only, labels):
        up = interp(cams[i, c], *size)
        t = threshold[c] if isinstance(threshold, dict) else threshold
        gt = box_mask(cls_boxes, *size)
        out.append((i, c, naive_iou(naive_segment(up, t), gt, true_positive_only), int(gt.sum())))
    return out


def naive_hit_rate(cams, boxes, size):
    out = []
    for i, c, cls_boxes in pairs_of(boxes, cams.shape[1]):
        up = interp(cams[i, c], *size)
        r, q = np.unravel_index(np.argmax(up, axis=None), up.shape)
        gt = box_mask(cls_boxes, *size)
        value = 1.0 if gt[r][q] == 1 else (math.nan if gt.sum() == 0 else 0.0)
        out.append((i, c, value, int(gt.sum())))
    return out


def random_cams(rng, shape):
    cams = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    cams[0, 0] = 0.25  # a constant map
    return cams


def test_naive_otsu_is_opencvs():
    rng = np.random.default_rng(1)
    for trial in range(40):
        q = rng.integers(0, 256, size=(int(rng.integers(3, 30)), int(rng.integers(3, 30))))
        if trial % 2:  # bimodal, with empty bins
            q = np.where(rng.random(q.shape) < 0.4, rng.integers(10, 60, q.shape), 200 + q % 40)
        q = q.astype(np.uint8)
        binary = cv2.threshold(q, 0, 255, cv2.THRESH_OTSU)[1] > 0
        np.testing.assert_array_equal(binary, q > naive_otsu(q))


@pytest.mark.parametrize("low,size", SIZES)
def test_hit_rate_matches_pixel_loop(low, size):
    rng = np.random.default_rng([*low, *size])
    cams = random_cams(rng, (5, 3, *low))
    boxes = random_boxes(rng, 5, 3, *size)
    boxes[0].append((2, 2, 4, 4, 0))
    expected = naive_hit_rate(cams, boxes, size)
    assert_same(hit_rate(cams, boxes, size), expected, size)
    assert_same(hit_rate(cams.numpy(), boxes, size, chunk_bytes=1), expected, size)


def test_hit_rate_first_maximum_empty_box_and_border():
    cams = torch.zeros(1, 3, 10, 12)
    cams[0, 0, 2, 5] = 1.0
    cams[0, 0, 4, 1] = 1.0  # tie, later in row-major order
    cams[0, 1, 9, 11] = 2.0  # bottom-right corner
    boxes = [[(1, 4, 1, 1, 0), (11, 9, 5, 5, 1), (3, 3, 0, 4, 2)]]  # box 2 covers no pixel
    got = hit_rate(cams, boxes, (10, 12))
    assert got.value.tolist()[:2] == [0.0, 1.0]
    assert math.isnan(got.value[2])
    assert got.box_area.tolist() == [1, 1, 0]
    summary = reduce_records(got, 3)
    assert summary["undefined"] == 1 and summary["n"] == 2
    boxes = [[(5, 2, 1, 1, 0)]]
    assert hit_rate(cams, boxes, (10, 12)).value.tolist() == [1.0]


@pytest.mark.parametrize("low,size", SIZES)
@pytest.mark.parametrize("true_positive_only", [True, False])
def test_segmentation_iou_otsu_matches_pixel_loop(low, size, true_positive_only):
    rng = np.random.default_rng([*low, *size, int(true_positive_only)])
    cams = random_cams(rng, (4, 3, *low))
    boxes = random_boxes(rng, 4, 3, *size)
    boxes[0].append((1, 1, 5, 4, 0))
    expected = naive_seg_iou(cams, boxes, size, "otsu", true_positive_only)
    got = segmentation_iou(cams, boxes, size, true_positive_only=true_positive_only)
    assert_same(got, expected, size)
    small = segmentation_iou(
        cams.numpy(), boxes, size, true_positive_only=true_positive_only, chunk_bytes=1
    )
    assert_same(small, expected, size)


@pytest.mark.parametrize("low,size", SIZES)
def test_segmentation_iou_fixed_thresholds_match_pixel_loop(low, size):
    rng = np.random.default_rng([*low, *size, 7])
    cams = random_cams(rng, (4, 3, *low))
    boxes = random_boxes(rng, 4, 3, *size)
    for threshold in (0.5, 0.30000000000000004, {0: 0.2, 1: 0.7000000000000002, 2: 0.45}):
        for tp in (True, False):
            expected = naive_seg_iou(cams, boxes, size, threshold, tp)
            got = segmentation_iou(cams, boxes, size, threshold=threshold, true_positive_only=tp)
            assert_same(got, expected, size)


def test_otsu_fills_holes_and_drops_isolated_pixels():
    cam = torch.zeros(1, 1, 12, 14)
    cam[0, 0, 2:8, 2:8] = 1.0
    cam[0, 0, 3:7, 3:7] = 0.0  # a ring around a 4 x 4 hole
    cam[0, 0, 10, 10] = 1.0  # an isolated pixel
    cam[0, 0, 0, 12:14] = 1.0  # two pixels: a two-point contour, kept
    expected = np.zeros((12, 14), dtype=bool)
    expected[2:8, 2:8] = True
    expected[0, 12:14] = True
    quantised = np.uint8(255 * cam[0, 0].numpy())
    np.testing.assert_array_equal(otsu_segmentation(quantised), expected)
    np.testing.assert_array_equal(naive_fill(quantised > naive_otsu(quantised)), expected)
    got = segmentation_iou(cam, [[(2, 2, 6, 6, 0)]], (12, 14))
    assert got.value.tolist() == [36 / 38]
    # A fixed threshold has no contour step: the hole and the isolated pixel stay as they are.
    fixed = segmentation_iou(cam, [[(2, 2, 6, 6, 0)]], (12, 14), threshold=0.5)
    assert fixed.value.tolist() == [20 / 39]


def test_constant_map_gives_an_empty_segmentation():
    cams = torch.full((1, 2, 6, 6), 3.0)
    boxes = [[(0, 0, 3, 3, 0)]]
    for threshold in ("otsu", 0.2):
        tp = segmentation_iou(cams, boxes, (12, 12), threshold=threshold)
        assert len(tp) == 1 and math.isnan(tp.value[0])
        everything = segmentation_iou(
            cams, boxes, (12, 12), threshold=threshold, true_positive_only=False
        )
        assert everything.class_index.tolist() == [0, 1]
        assert everything.value[0] == 0.0 and math.isnan(everything.value[1])
        assert reduce_records(everything, 2)["undefined"] == 1


def test_negative_pairs_from_labels():
    rng = np.random.default_rng(5)
    cams = torch.from_numpy(rng.normal(size=(3, 3, 6, 6)).astype(np.float32))
    boxes = [[(0, 0, 5, 5, 1)], [], [(4, 4, 8, 8, 2)]]
    labels = np.array([[0, 1, 1], [0, 0, 1], [1, 0, 1]])
    got = segmentation_iou(cams, boxes, (24, 24), true_positive_only=False, labels=labels)
    # scored: pairs with boxes, and pairs labelled 0; (0, 2) and (1, 2) positive without boxes
    pairs = list(zip(got.image_index.tolist(), got.class_index.tolist(), strict=True))
    assert pairs == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (2, 2)]
    expected = naive_seg_iou(cams, boxes, (24, 24), "otsu", False, labels)
    assert_same(got, expected, (24, 24))
    negatives = got.value[torch.tensor([0, 2, 3, 4])]
    assert (negatives == 0).all()  # Otsu never segments nothing on a non-constant map
    # true_positive_only ignores negatives; labels are still checked
    tp = segmentation_iou(cams, boxes, (24, 24), labels=torch.from_numpy(labels))
    assert len(tp) == 2
    with pytest.raises(ValueError, match="labelled 0"):
        segmentation_iou(cams, [[(0, 0, 5, 5, 0)], [], []], (24, 24), labels=labels)
    with pytest.raises(ValueError, match="labels"):
        segmentation_iou(cams, boxes, (24, 24), labels=labels[:2])
    with pytest.raises(ValueError, match="0 and 1"):
        segmentation_iou(cams, boxes, (24, 24), labels=labels * 2)


def test_threshold_is_compared_as_float32():
    t = DEFAULT_GRID[1]  # 0.30000000000000004
    assert threshold_cut(t) == float(np.float32(0.3)) == threshold_cut(0.3)
    cam = torch.zeros(1, 1, 4, 4)
    cam[0, 0, 0, 0] = 1.0
    cam[0, 0, 0, 1] = float(np.float32(0.3))  # above t in float64, not above float32(t)
    cam[0, 0, 0, 2] = float(np.nextafter(np.float32(0.3), np.float32(1)))
    got = segmentation_iou(cam, [[(0, 0, 2, 1, 0)]], (4, 4), threshold=t)
    assert got.value.tolist() == [1 / 3]  # pixels (0, 0) and (0, 2) kept


@pytest.mark.parametrize("low,size", SIZES[:3])
def test_tuning_matches_loop(low, size):
    rng = np.random.default_rng([*low, *size, 11])
    cams = random_cams(rng, (6, 3, *low))
    boxes = random_boxes(rng, 6, 3, *size)
    boxes[1].append((3, 3, 6, 6, 2))
    mious = {c: [] for c in range(3)}
    for t in DEFAULT_GRID:
        values = naive_seg_iou(cams, boxes, size, float(t))
        for c in range(3):
            defined = [v for _, k, v, _ in values if k == c and not math.isnan(v)]
            mious[c].append(sum(defined) / len(defined) if defined else math.nan)
    expected = {}
    for c, row in mious.items():
        if not all(math.isnan(v) for v in row):
            top = max(v for v in row if not math.isnan(v))
            expected[c] = float(DEFAULT_GRID[row.index(top)])
    assert tune_segmentation_threshold(cams, boxes, size) == expected
    assert tune_segmentation_threshold(cams, boxes, size, chunk_bytes=1) == expected


def test_tuning_known_best_and_first_maximum():
    cams = torch.zeros(2, 3, 10, 10)
    cams[:, 0, 3:7, 3:7] = 0.5  # a halo around the box ...
    cams[:, 0, 4:6, 4:6] = 1.0  # ... and the box
    cams[:, 1, 4:6, 4:6] = 1.0  # no halo: every threshold gives IoU 1, the first wins
    boxes = [[(4, 4, 2, 2, 0), (4, 4, 2, 2, 1), (0, 0, 0, 3, 2)] for _ in range(2)]
    best = tune_segmentation_threshold(cams, boxes, (10, 10))
    # 0.2 .. 0.4 keep the halo (IoU 4 / 16); from 0.5000000000000001 on, the box alone (IoU 1)
    assert best == {0: float(DEFAULT_GRID[3]), 1: float(DEFAULT_GRID[0])}  # class 2: no pixel
    assert tune_segmentation_threshold(cams, boxes, (10, 10), grid=[0.9, 0.1]) == {0: 0.9, 1: 0.9}
    assert tune_segmentation_threshold(cams, [[], []], (10, 10)) == {}


def test_bad_thresholds():
    cams = torch.randn(1, 2, 4, 4)
    boxes = [[(0, 0, 2, 2, 1)]]
    with pytest.raises(ValueError, match="otsu"):
        segmentation_iou(cams, boxes, (8, 8), threshold="Otsu ")
    with pytest.raises(ValueError, match="finite"):
        segmentation_iou(cams, boxes, (8, 8), threshold=math.nan)
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        segmentation_iou(cams, boxes, (8, 8), threshold={0: 0.5})
    segmentation_iou(cams, boxes, (8, 8), threshold={1: 0.5})  # classes without pairs may lack one
    with pytest.raises(ValueError, match="grid"):
        tune_segmentation_threshold(cams, boxes, (8, 8), grid=[])
