"""MaxBoxAcc / MaxBoxAccV2 (pylon.metrics.maxboxacc) against a naive implementation written from
the definition (clovaai/wsolevaluation: inference.py normalize_scoremap, evaluation.py
compute_bboxes_from_scoremaps, calculate_multiple_iou, BoxEvaluator) and hand-computed cases."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from pylon.metrics.maxboxacc import (
    BoxIoURecords,
    box_accuracy,
    box_iou_records,
    box_iou_records_both,
    default_cam_thresholds,
    max_box_acc,
    records_at,
    scoremap_image,
)
from pylon.metrics.records import PairRecords, reduce_records

# ---------------------------------------------------------------------------------------------
# The naive reference: one threshold at a time, OpenCV calls and plain Python IoU.


def naive_scoremap(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    up = cv2.resize(cam.astype(np.float64), (width, height), interpolation=cv2.INTER_CUBIC)
    if np.isnan(up).any() or up.min() == up.max():
        up = np.zeros_like(up)
    else:
        up = up - up.min()
        up = up / up.max()
    return up


def naive_boxes(scoremap: np.ndarray, threshold: float, multi_contour: bool) -> list[list[int]]:
    height, width = scoremap.shape
    image = np.expand_dims((scoremap * 255).astype(np.uint8), 2)
    _, binary = cv2.threshold(image, int(threshold * np.max(image)), 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) == 0:
        return [[0, 0, 0, 0]]
    if not multi_contour:
        contours = [max(contours, key=cv2.contourArea)]
    out = []
    for c in contours:
        x, y, w, h = cv2.boundingRect(c)
        out.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
    return out


def naive_iou(a: list[int], b: list[int]) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1) * max(
        0, min(a[3], b[3]) - max(a[1], b[1]) + 1
    )
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    den = area_a + area_b - inter
    return inter / den if den > 0 else 0.0


def naive_pair(cam, gts, height, width, thresholds, multi_contour) -> list[float]:
    scoremap = naive_scoremap(cam, height, width)
    best = []
    for t in thresholds:
        boxes = naive_boxes(scoremap, t, multi_contour)
        best.append(max(naive_iou(a, b) for a in boxes for b in gts))
    return best


def naive_records(cams, boxes, height, width, thresholds, multi_contour):
    """{(image, class): [best IoU per threshold]} for pairs with boxes."""
    out = {}
    for i, image_boxes in enumerate(boxes):
        for c in sorted({int(b[4]) for b in image_boxes}):
            gts = [
                [int(x), int(y), int(x + w), int(y + h)]
                for x, y, w, h, k in image_boxes
                if int(k) == c
            ]
            out[(i, c)] = naive_pair(cams[i, c], gts, height, width, thresholds, multi_contour)
    return out


def naive_max_box_acc(table: dict, thresholds, iou_levels):
    ious = np.array(list(table.values()))
    accs, picks = [], []
    for d in iou_levels:
        curve = [sum(1 for row in ious if row[k] >= d) / len(ious) for k in range(len(thresholds))]
        best = max(curve)
        accs.append(best)
        picks.append(curve.index(best))
    return accs, picks


def random_boxes(rng, num_images, num_classes, height, width, max_boxes=4):
    boxes = []
    for _ in range(num_images):
        image_boxes = []
        for _ in range(int(rng.integers(0, max_boxes + 1))):
            w = float(rng.uniform(0, width * 0.6))
            h = float(rng.uniform(0, height * 0.6))
            x = float(rng.uniform(0, width - 1))
            y = float(rng.uniform(0, height - 1))
            if rng.random() < 0.2:  # touching the right / bottom border
                w = width - x
            if rng.random() < 0.2:
                h = height - y
            image_boxes.append((x, y, w, h, int(rng.integers(0, num_classes))))
        boxes.append(image_boxes)
    return boxes


# ---------------------------------------------------------------------------------------------
# Against the naive implementation.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_naive_random_maps_non_square(seed):
    rng = np.random.default_rng(seed)
    num_images, num_classes, height, width = 5, 3, 37, 61
    cams = rng.normal(size=(num_images, num_classes, 5, 7)).astype(np.float32)
    cams[0, 1] = 0.5  # a constant map
    boxes = random_boxes(rng, num_images, num_classes, height, width)
    boxes[0].append((3.0, 4.0, 10.0, 9.0, 1))
    grid = np.arange(0, 1, 0.01)
    largest, every = box_iou_records_both(cams, boxes, (height, width), cam_thresholds=grid)
    for records, multi in ((largest, False), (every, True)):
        expected = naive_records(cams, boxes, height, width, grid, multi)
        assert records.multi_contour is multi
        got = {
            (int(i), int(c)): row.tolist()
            for i, c, row in zip(records.image_index, records.class_index, records.iou, strict=True)
        }
        assert list(got) == list(expected)  # ordered by image, then class
        for key, row in expected.items():
            assert got[key] == row, key
        accs, picks = naive_max_box_acc(expected, grid, (0.3, 0.5, 0.7))
        result = box_accuracy(records)
        assert result.accuracy.tolist() == accs
        assert result.threshold_index.tolist() == picks
        assert result.mean == pytest.approx(sum(accs) / 3, abs=1e-15)


def test_matches_naive_default_grid_and_odd_grid():
    rng = np.random.default_rng(7)
    height, width = 29, 23
    cams = torch.from_numpy(rng.normal(size=(2, 2, 4, 3)))  # float64 torch input
    boxes = [[(2, 3, 10, 12, 0), (12.7, 1.2, 8.9, 20.5, 0)], [(0, 0, 22.0, 28.0, 1)]]
    grid = default_cam_thresholds()
    assert len(grid) == 1000 and grid[1] == 0.001
    odd = np.sort(rng.uniform(0, 1, size=37))
    for thresholds in (None, odd):
        used = grid if thresholds is None else odd
        for multi in (False, True):
            records = box_iou_records(
                cams, boxes, (height, width), cam_thresholds=thresholds, multi_contour=multi
            )
            expected = naive_records(cams.numpy(), boxes, height, width, used, multi)
            assert records.iou.tolist() == list(expected.values())
            assert records.cam_thresholds.tolist() == list(used)


def test_equal_area_blobs_largest_is_the_first_contour():
    # Two blobs of the same area: MaxBoxAcc keeps the first of findContours' list, as Python's max.
    cam = np.zeros((40, 40))
    cam[5:12, 5:12] = 1.0
    cam[25:32, 20:27] = 1.0
    cams = cam[None, None]
    first = naive_boxes(naive_scoremap(cam, 40, 40), 0.5, multi_contour=False)[0]
    other = [5, 5, 12, 12] if first != [5, 5, 12, 12] else [20, 25, 27, 32]
    for gt, value in ((first, 1.0), (other, 0.0)):
        box = (gt[0], gt[1], gt[2] - gt[0], gt[3] - gt[1], 0)
        records = box_iou_records(cams, [[box]], (40, 40), multi_contour=False)
        assert records.iou[0, 500].item() == value


# ---------------------------------------------------------------------------------------------
# Hand-computed cases (maps at the input size: the bicubic resize is then a copy).


def test_full_size_map_is_copied():
    cam = np.zeros((20, 30))
    cam[3:8, 4:9] = 2.0
    assert np.array_equal(scoremap_image(cam, (20, 30)), (cam / 2 * 255).astype(np.uint8))


def test_two_blobs_v1_keeps_the_largest_v2_all():
    cam = np.zeros((64, 64))
    cam[10:30, 5:25] = 1.0  # large: box [5, 10, 25, 30]
    cam[40:44, 50:54] = 1.0  # small: box [50, 40, 54, 44]
    small = [(50, 40, 4, 4, 0)]
    large = [(5, 10, 20, 20, 0)]
    grid = [0.0, 0.5, 0.999]
    for gt, v1, v2 in ((small, 0.0, 1.0), (large, 1.0, 1.0)):
        largest, every = box_iou_records_both(cam[None, None], [gt], (64, 64), cam_thresholds=grid)
        assert largest.iou.tolist() == [[v1] * 3]
        assert every.iou.tolist() == [[v2] * 3]
    v1 = max_box_acc(cam[None, None], [small], (64, 64), multi_contour=False)
    v2 = max_box_acc(cam[None, None], [small], (64, 64))
    assert v1.at(0.5) == 0.0 and v2.at(0.5) == 1.0 and v2.mean == 1.0


def test_ring_hole_edge_is_a_contour():
    # RETR_TREE: the hole's edge (the ring's inner border, rows / cols 19..30) is a contour too.
    cam = np.zeros((50, 50))
    cam[10:40, 10:40] = 1.0
    cam[20:30, 20:30] = 0.0
    hole = [(19, 19, 12, 12, 0)]  # [19, 19, 31, 31]
    outer = [(10, 10, 30, 30, 0)]  # [10, 10, 40, 40]
    largest, every = box_iou_records_both(cam[None, None], [hole], (50, 50), cam_thresholds=[0.5])
    assert every.iou.item() == 1.0
    assert largest.iou.item() == 13 * 13 / (31 * 31)  # the outer contour, area 841 > 119
    largest, every = box_iou_records_both(cam[None, None], [outer], (50, 50), cam_thresholds=[0.5])
    assert largest.iou.item() == 1.0 and every.iou.item() == 1.0


@pytest.mark.parametrize("value", [0.0, 3.5, math.nan])
def test_constant_or_nan_map_gives_the_empty_box(value):
    cam = np.full((1, 1, 6, 6), value)
    at_origin = box_iou_records(cam, [[(0, 0, 0, 0, 0)]], (16, 16), cam_thresholds=[0, 0.5])
    assert at_origin.iou.tolist() == [[1.0, 1.0]]  # [0,0,0,0] vs [0,0,0,0]: one pixel each
    corner = box_iou_records(cam, [[(0, 0, 1, 1, 0)]], (16, 16), cam_thresholds=[0, 0.5])
    assert corner.iou.tolist() == [[0.25, 0.25]]  # 1 pixel of the 2x2 box [0, 0, 1, 1]
    away = box_iou_records(cam, [[(5, 5, 3, 3, 0)]], (16, 16), cam_thresholds=[0, 0.5])
    assert away.iou.tolist() == [[0.0, 0.0]]


def test_infinite_map_is_refused():
    cams = np.zeros((2, 2, 4, 4))
    cams[1, 0, 2, 2] = np.inf
    with pytest.raises(ValueError, match=r"cams\[1, 0\] contains infinite"):
        box_iou_records(cams, [[], [(0, 0, 2, 2, 0)]], (8, 8))
    # A map without boxes is not read.
    box_iou_records(cams, [[(0, 0, 2, 2, 1)], [(0, 0, 2, 2, 1)]], (8, 8))


def test_boxes_on_the_border_clip_predictions_to_w_minus_1():
    cam = np.zeros((64, 64))
    cam[:, 40:] = 1.0  # boundingRect (40, 0, 24, 64) -> [40, 0, 63, 63]
    gt_edge = [(40, 0, 24, 64, 0)]  # [40, 0, 64, 64], not clipped
    gt_inside = [(40, 0, 23, 63, 0)]  # [40, 0, 63, 63]
    edge = box_iou_records(cam[None, None], [gt_edge], (64, 64), cam_thresholds=[0.5])
    inside = box_iou_records(cam[None, None], [gt_inside], (64, 64), cam_thresholds=[0.5])
    assert edge.iou.item() == (24 * 64) / (25 * 65)
    assert inside.iou.item() == 1.0
    # The whole image: boundingRect (0, 0, 80, 50) -> [0, 0, 79, 49] on a non-square image.
    cam = np.ones((50, 80))
    cam[0, 0] = 0.0  # not constant; at t = 0 the mask holds all pixels but (0, 0)
    full = box_iou_records(cam[None, None], [[(0, 0, 79, 49, 0)]], (50, 80), cam_thresholds=[0])
    assert full.iou.item() == 1.0


def test_threshold_is_strict_at_exact_levels():
    # uint8 map: background 0, region A = 51, region B = 255; int(0.2 * 255) = 51: A is out at
    # t = 0.2 (pixel > 51 is false), in at t = 0.199 (level 50).
    cam = np.zeros((40, 40))
    cam[5:15, 5:15] = 51.0  # A
    cam[5:15, 15:25] = 255.0  # B, right of A
    image = scoremap_image(cam.copy(), (40, 40))
    assert image[5, 5] == 51 and image[5, 20] == 255 and int(0.2 * 255) == 51
    gt_b = [(15, 5, 10, 10, 0)]  # [15, 5, 25, 15]
    records = box_iou_records(
        cam[None, None], [gt_b], (40, 40), cam_thresholds=[0.199, 0.2], multi_contour=False
    )
    union_box = 21 * 11  # [5, 5, 25, 15]
    assert records.iou.tolist() == [[(11 * 11) / union_box, 1.0]]


# ---------------------------------------------------------------------------------------------
# Reductions.


def _records(iou_rows, thresholds, classes=None, multi=True):
    iou = torch.tensor(iou_rows, dtype=torch.float64)
    n = len(iou)
    return BoxIoURecords(
        torch.arange(n),
        torch.tensor(classes if classes is not None else [0] * n),
        iou,
        torch.full((n,), 10, dtype=torch.long),
        torch.full((n,), 100, dtype=torch.long),
        torch.tensor(thresholds, dtype=torch.float64),
        multi,
    )


def test_best_threshold_ties_take_the_first():
    records = _records(
        [[0.6, 0.2, 0.6, 0.9], [0.1, 0.6, 0.6, 0.1], [0.5, 0.5, 0.4, 0.8]],
        [0.1, 0.2, 0.3, 0.4],
    )
    result = box_accuracy(records, (0.5, 0.7))
    # IoU >= 0.5: counts 2, 2, 2, 2 -> first; IoU >= 0.7: 0, 0, 0, 2.
    assert result.curves.tolist() == [[2 / 3] * 4, [0, 0, 0, 2 / 3]]
    assert result.threshold_index.tolist() == [0, 3]
    assert result.threshold.tolist() == [0.1, 0.4]
    assert result.accuracy.tolist() == [2 / 3, 2 / 3]
    assert result.oracle is True and result.n == 3
    assert result.as_dict()["boxacc_iou0.5"] == 2 / 3
    assert result.as_dict()["threshold_iou0.7"] == 0.4


def test_iou_equal_to_delta_counts():
    result = box_accuracy(_records([[0.5], [0.7], [0.3]], [0.5]), (0.3, 0.5, 0.7))
    assert result.accuracy.tolist() == [1.0, 2 / 3, 1 / 3]
    assert result.mean == pytest.approx(2 / 3)


def test_chosen_thresholds_from_a_validation_split():
    thresholds = [0.1, 0.2, 0.3]
    val = box_accuracy(_records([[0.1, 0.8, 0.2], [0.2, 0.9, 0.6]], thresholds), (0.5,))
    assert val.threshold_index.tolist() == [1] and val.oracle
    test = _records([[0.9, 0.1, 0.9], [0.9, 0.6, 0.9]], thresholds)
    applied = box_accuracy(test, (0.5,), chosen_thresholds=val)
    assert not applied.oracle
    assert applied.threshold_index.tolist() == [1] and applied.accuracy.tolist() == [0.5]
    assert box_accuracy(test, (0.5,)).accuracy.tolist() == [1.0]  # the oracle is optimistic
    one = box_accuracy(test, (0.5, 0.7), chosen_thresholds=0.3)
    assert one.threshold_index.tolist() == [2, 2]
    per_level = box_accuracy(test, (0.5, 0.7), chosen_thresholds=[0.1, 0.2])
    assert per_level.threshold_index.tolist() == [0, 1]
    with pytest.raises(ValueError, match="not on the cam-threshold grid"):
        box_accuracy(test, (0.5,), chosen_thresholds=0.25)
    with pytest.raises(ValueError, match="one per IoU level"):
        box_accuracy(test, (0.5, 0.7), chosen_thresholds=[0.1, 0.2, 0.3])


def test_max_box_acc_with_chosen_thresholds_is_not_oracle():
    rng = np.random.default_rng(3)
    cams = rng.normal(size=(4, 2, 4, 4))
    boxes = random_boxes(rng, 4, 2, 32, 32)
    boxes[0].append((1, 1, 10, 10, 0))
    oracle = max_box_acc(cams, boxes, (32, 32), cam_thresholds=np.arange(0, 1, 0.05))
    fixed = max_box_acc(
        cams, boxes, (32, 32), cam_thresholds=np.arange(0, 1, 0.05), chosen_thresholds=0.5
    )
    assert oracle.oracle and not fixed.oracle
    assert fixed.threshold.tolist() == [0.5] * 3
    assert (fixed.accuracy <= oracle.accuracy).all()
    assert fixed.records is not None and len(fixed.records) == fixed.n


def test_records_at_gives_pair_records():
    records = _records([[0.2, 0.6], [0.7, 0.4], [0.5, 0.5]], [0.1, 0.2], classes=[0, 1, 1])
    hits = records_at(records, 1, 0.5)
    assert isinstance(hits, PairRecords)
    assert hits.value.tolist() == [1.0, 0.0, 1.0]
    assert hits.class_index.tolist() == [0, 1, 1]
    assert hits.box_area.tolist() == [10, 10, 10] and hits.image_area.tolist() == [100] * 3
    reduced = reduce_records(hits, 2)
    assert reduced["per_class"].tolist() == [1.0, 0.5]
    assert reduced["pooled"] == pytest.approx(2 / 3)
    # Agrees with the curve at that threshold.
    assert box_accuracy(records, (0.5,)).curves[0, 1].item() == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="outside the grid"):
        records_at(records, 2, 0.5)


def test_box_area_is_the_union_of_the_boxes():
    cams = np.random.default_rng(0).normal(size=(1, 2, 4, 4))
    boxes = [[(0, 0, 10, 10, 0), (5, 5, 10, 10, 0), (30, 30, 10, 10, 1)]]
    records = box_iou_records(cams, boxes, (36, 40), cam_thresholds=[0.5])
    assert records.box_area.tolist() == [175, 6 * 10]  # 100 + 100 - 25; clipped at row 36
    assert records.image_area.tolist() == [36 * 40] * 2


def test_cat_of_batches_equals_the_whole():
    rng = np.random.default_rng(5)
    cams = rng.normal(size=(6, 2, 5, 5))
    boxes = random_boxes(rng, 6, 2, 24, 24)
    boxes[4].append((2, 2, 8, 8, 1))
    grid = np.arange(0, 1, 0.02)
    whole = box_iou_records(cams, boxes, (24, 24), cam_thresholds=grid)
    parts = []
    for start in (0, 2, 5):
        stop = {0: 2, 2: 5, 5: 6}[start]
        part = box_iou_records(
            cams[start:stop], boxes[start:stop], (24, 24), cam_thresholds=grid, image_offset=start
        )
        parts.append(part)
    joined = BoxIoURecords.cat(parts)
    for name in ("image_index", "class_index", "iou", "box_area", "image_area"):
        assert torch.equal(getattr(joined, name), getattr(whole, name)), name
    a, b = box_accuracy(joined), box_accuracy(whole)
    assert torch.equal(a.curves, b.curves) and torch.equal(a.threshold_index, b.threshold_index)
    other = box_iou_records(cams, boxes, (24, 24), cam_thresholds=grid[:-1])
    with pytest.raises(ValueError, match="different cam thresholds"):
        BoxIoURecords.cat([whole, other])
    v1 = box_iou_records(cams, boxes, (24, 24), cam_thresholds=grid, multi_contour=False)
    with pytest.raises(ValueError, match="multi_contour"):
        BoxIoURecords.cat([whole, v1])
    kept = whole.select(whole.class_index == 1)
    assert (kept.class_index == 1).all() and kept.iou.shape[1] == len(grid)


def test_workers_give_the_same_records():
    rng = np.random.default_rng(11)
    cams = rng.normal(size=(6, 2, 6, 6))
    boxes = random_boxes(rng, 6, 2, 40, 40)
    one = box_iou_records(cams, boxes, (40, 40), cam_thresholds=np.arange(0, 1, 0.01))
    two = box_iou_records(cams, boxes, (40, 40), cam_thresholds=np.arange(0, 1, 0.01), workers=2)
    assert torch.equal(one.iou, two.iou)


def test_pairs_without_boxes_and_empty_input():
    cams = np.zeros((2, 3, 4, 4))
    records = box_iou_records(cams, [[], []], (8, 8), cam_thresholds=[0.1, 0.2])
    assert len(records) == 0 and records.iou.shape == (0, 2)
    result = box_accuracy(records)
    assert result.n == 0 and math.isnan(result.mean)
    assert result.threshold_index.tolist() == [-1, -1, -1]
    records = box_iou_records(cams, [[(0, 0, 2, 2, 2)], []], (8, 8), cam_thresholds=[0.1])
    assert records.image_index.tolist() == [0] and records.class_index.tolist() == [2]


def test_bad_arguments():
    cams = np.zeros((1, 1, 4, 4))
    boxes = [[(0, 0, 2, 2, 0)]]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        box_iou_records(cams, boxes, (8, 8), cam_thresholds=[0.5, 1.5])
    with pytest.raises(ValueError, match="non-empty"):
        box_iou_records(cams, boxes, (8, 8), cam_thresholds=[])
    with pytest.raises(ValueError, match="outside"):
        box_iou_records(cams, [[(20, 20, 2, 2, 0)]], (8, 8))
    with pytest.raises(ValueError, match="iou_thresholds"):
        box_accuracy(box_iou_records(cams, boxes, (8, 8), cam_thresholds=[0.5]), (1.5,))


def test_contour_boxes_and_areas_equal_opencv():
    from pylon.metrics.maxboxacc import _boxes_and_areas

    rng = np.random.default_rng(2)
    for _ in range(20):
        mask = (rng.random((23, 31)) < 0.3).astype(np.uint8)  # isolated pixels, lines, holes
        contours, _ = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        boxes, areas = _boxes_and_areas(list(contours), 23, 31)
        expected = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            expected.append([x, y, min(x + w, 30), min(y + h, 22)])
        assert boxes.tolist() == expected
        assert areas.tolist() == [cv2.contourArea(c) for c in contours]
        assert min(len(c) for c in contours) <= 2  # degenerate contours are covered
