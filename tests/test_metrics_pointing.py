"""Pointing game (TorchRay) and energy pointing game (Score-CAM) against loops written here.

The definitions (shared/benchmark-metrics.md; facebookresearch/TorchRay
``torchray/benchmark/pointing_game.py``, haofanwang/Score-CAM ``utils/energyPointGame.py``): the
raw map up-sampled with ``F.interpolate(bilinear, align_corners=False)`` one map at a time (the
reference codes' call, itself checked here against the formula); the point is the flat arg-max; a
hit if a box pixel lies strictly within ``tolerance`` of it; the energy is the share of the
ReLU'd, min-max'd map inside the boxes. A box covers rows ``int(y) .. int(y)+int(h)-1`` and columns
``int(x) .. int(x)+int(w)-1`` clipped to the image.
"""

import math

import numpy as np
import pytest
import torch
from naive_maps import as_tuples, assert_same, box_mask, interp

from pylon.metrics.pointing import energy_pointing_game, pointing_game
from pylon.metrics.records import reduce_records

SIZES = [((7, 9), (30, 40)), ((8, 8), (32, 32)), ((5, 11), (23, 17)), ((16, 12), (64, 48))]


def bilinear(src: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear up-sampling with ``align_corners=False``, pixel by pixel, float64."""
    h, w = src.shape
    out = np.zeros((height, width))

    def source(dst, n_in, n_out):
        s = max((dst + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(s)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), s - i0

    for r in range(height):
        r0, r1, fr = source(r, h, height)
        for c in range(width):
            c0, c1, fc = source(c, w, width)
            top = (1 - fc) * src[r0, c0] + fc * src[r0, c1]
            bottom = (1 - fc) * src[r1, c0] + fc * src[r1, c1]
            out[r, c] = (1 - fr) * top + fr * bottom
    return out


def first_max(up: np.ndarray) -> tuple[int, int]:
    best, where = -math.inf, None
    for r in range(up.shape[0]):
        for c in range(up.shape[1]):
            if up[r, c] > best:
                best, where = up[r, c], (r, c)
    return where


def scored_pairs(boxes, num_classes):
    """(image, class, boxes of that class) for every pair with a box, image then class."""
    for i, image_boxes in enumerate(boxes):
        for c in range(num_classes):
            cls_boxes = [b for b in image_boxes if b[4] == c]
            if cls_boxes:
                yield i, c, cls_boxes


def naive_pointing(cams, boxes, size, tolerance):
    height, width = size
    out = []
    for i, c, cls_boxes in scored_pairs(boxes, cams.shape[1]):
        row, col = first_max(interp(cams[i, c], height, width))
        mask = box_mask(cls_boxes, height, width)
        hit = any(
            mask[r, q] and (r - row) ** 2 + (q - col) ** 2 < tolerance**2
            for r in range(height)
            for q in range(width)
        )
        out.append((i, c, float(hit), int(mask.sum())))
    return out


def naive_energy(cams, boxes, size):
    height, width = size
    out = []
    for i, c, cls_boxes in scored_pairs(boxes, cams.shape[1]):
        up = torch.from_numpy(interp(cams[i, c], height, width)).relu()
        low, high = up.min(), up.max()
        mask = box_mask(cls_boxes, height, width)
        if low == high:
            value = math.nan
        else:
            norm = ((up - low) / (high - low)).numpy()  # float32, as Score-CAM
            inside = total = 0.0
            for r in range(height):
                for q in range(width):
                    total += float(norm[r, q])
                    if mask[r, q]:
                        inside += float(norm[r, q])
            value = inside / total
        out.append((i, c, value, int(mask.sum())))
    return out


def random_boxes(rng, num_images, num_classes, height, width):
    """1-4 boxes per image, some off the border, some of zero size, some fractional."""
    boxes = []
    for _ in range(num_images):
        image_boxes = []
        for _ in range(int(rng.integers(0, 5))):
            x = float(rng.uniform(-0.2 * width, width - 1))
            y = float(rng.uniform(-0.2 * height, height - 1))
            w = max(float(rng.uniform(0, 0.6 * width)), -x)
            h = max(float(rng.uniform(0, 0.6 * height)), -y)
            if rng.random() < 0.3:
                x, y, w, h = (float(int(v)) for v in (x, y, w, h))
                w, h = max(w, -x), max(h, -y)
            if rng.random() < 0.05:
                w = 0.0 if x >= 0 else w
            image_boxes.append((x, y, w, h, int(rng.integers(0, num_classes))))
        boxes.append(image_boxes)
    return boxes


@pytest.mark.parametrize("low,size", SIZES)
def test_bilinear_formula_is_what_interp_computes(low, size):
    rng = np.random.default_rng(0)
    src = rng.normal(size=low)
    expected = bilinear(src, *size)
    got = interp(torch.from_numpy(src), *size)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("low,size", SIZES)
@pytest.mark.parametrize("tolerance", [1, 3, 15])
def test_pointing_game_matches_pixel_loop(low, size, tolerance):
    rng = np.random.default_rng([*low, *size, tolerance])
    cams = torch.from_numpy(rng.normal(size=(5, 3, *low)).astype(np.float32))
    boxes = random_boxes(rng, 5, 3, *size)
    expected = naive_pointing(cams, boxes, size, tolerance)
    assert expected
    got = pointing_game(cams, boxes, size, tolerance=tolerance)
    assert_same(got, expected, size)
    # chunking and numpy input change nothing
    small = pointing_game(cams.numpy(), boxes, size, tolerance=tolerance, chunk_bytes=1)
    assert as_tuples(small) == as_tuples(got)


@pytest.mark.parametrize("low,size", SIZES)
def test_energy_pointing_game_matches_pixel_loop(low, size):
    rng = np.random.default_rng([*low, *size])
    cams = torch.from_numpy(rng.normal(size=(5, 3, *low)).astype(np.float32))
    cams[0] = -cams[0].abs()  # all negative: zero after the ReLU, undefined
    boxes = random_boxes(rng, 5, 3, *size)
    boxes[0].append((1, 1, 3, 3, 0))
    expected = naive_energy(cams, boxes, size)
    got = energy_pointing_game(cams, boxes, size)
    assert_same(got, expected, size, rel=1e-6)
    assert math.isnan(got.value[0])
    small = energy_pointing_game(cams.numpy(), boxes, size, chunk_bytes=1)
    torch.testing.assert_close(small.value, got.value, equal_nan=True, rtol=1e-6, atol=0)


def test_pointing_first_maximum_on_ties():
    cam = torch.zeros(1, 1, 10, 12)
    cam[0, 0, 2, 5] = 1.0
    cam[0, 0, 4, 1] = 1.0  # same value, later in row-major order
    at_second = [[(1, 4, 1, 1, 0)]]  # covers exactly (row 4, col 1)
    at_first = [[(5, 2, 1, 1, 0)]]  # covers exactly (row 2, col 5)
    assert pointing_game(cam, at_second, (10, 12), tolerance=1).value.tolist() == [0.0]
    assert pointing_game(cam, at_first, (10, 12), tolerance=1).value.tolist() == [1.0]


@pytest.mark.parametrize(
    "box,tolerance,hit",
    [
        ((10, 10, 1, 1, 0), 1, True),  # the peak pixel itself
        ((11, 10, 5, 5, 0), 1, False),  # next column: distance 1, not < 1
        ((11, 10, 5, 5, 0), 2, True),
        ((11, 11, 5, 5, 0), 1, False),  # diagonal: distance^2 2
        ((11, 11, 5, 5, 0), 2, True),  # 2 < 4
        ((13, 10, 5, 5, 0), 3, False),  # distance exactly 3: strict
        ((13, 10, 5, 5, 0), 4, True),
        ((0, 0, 10, 10, 0), 1, False),  # rows/cols 0..9: ends just before the peak
        ((0, 0, 11, 11, 0), 1, True),
        ((13, 14, 5, 5, 0), 5, False),  # nearest pixel (14, 13): 4^2 + 3^2 = 25, not < 25
        ((13, 14, 5, 5, 0), 6, True),
    ],
)
def test_pointing_tolerance_is_a_strict_disc(box, tolerance, hit):
    cam = torch.zeros(1, 1, 20, 24)
    cam[0, 0, 10, 10] = 1.0
    got = pointing_game(cam, [[box]], (20, 24), tolerance=tolerance)
    assert got.value.tolist() == [float(hit)]


def test_pointing_boxes_touching_the_border():
    cam = torch.zeros(1, 2, 16, 20)
    cam[0, 0, 0, 0] = 1.0  # top-left corner
    cam[0, 1, 15, 19] = 1.0  # bottom-right corner
    boxes = [[(-5, -3, 6, 4, 0), (17, 14, 10, 10, 1)]]  # clipped to rows 0..0, cols 0..0 / ...
    got = pointing_game(cam, boxes, (16, 20), tolerance=1)
    assert got.value.tolist() == [1.0, 1.0]
    assert got.box_area.tolist() == [1 * 1, 2 * 3]
    # A box whose far edge just touches column 0 (x + w == 0) covers no pixel: a miss.
    got = pointing_game(cam[:, :1], [[(-4, 0, 4, 5, 0)]], (16, 20), tolerance=3)
    assert got.value.tolist() == [0.0] and got.box_area.tolist() == [0]


def test_pointing_voc_inclusive_boxes_give_torchray_mask():
    # TorchRay's voc_as_mask: mask[ymin-1 : ymax, xmin-1 : xmax] = 1 for 1-based corners.
    xmin, ymin, xmax, ymax = 3, 5, 9, 8
    torchray = np.zeros((12, 14), dtype=bool)
    torchray[ymin - 1 : ymax, xmin - 1 : xmax] = True
    box = (xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1, 0)
    np.testing.assert_array_equal(box_mask([box], 12, 14), torchray)
    for row in range(12):
        for col in range(14):
            cam = torch.zeros(1, 1, 12, 14)
            cam[0, 0, row, col] = 1.0
            got = pointing_game(cam, [[box]], (12, 14), tolerance=1)
            assert got.value.tolist() == [float(torchray[row, col])]
            assert got.box_area.tolist() == [int(torchray.sum())]


def test_pointing_union_of_boxes_and_record_order():
    cams = torch.zeros(3, 3, 8, 8)
    cams[2, 1, 6, 6] = 1.0
    boxes = [
        [(0, 0, 4, 4, 2), (2, 2, 4, 4, 2)],  # overlapping: union 16 + 16 - 4
        [],
        [(5, 5, 3, 3, 1), (0, 0, 2, 2, 1), (0, 0, 1, 1, 0)],
    ]
    got = pointing_game(cams, boxes, (8, 8), tolerance=1)
    assert got.image_index.tolist() == [0, 2, 2]
    assert got.class_index.tolist() == [2, 0, 1]
    assert got.box_area.tolist() == [28, 1, 13]
    assert got.value.tolist() == [1.0, 1.0, 1.0]  # all-zero maps point at (0, 0)
    summary = reduce_records(got, 3)
    assert summary["pooled"] == 1.0 and summary["n"] == 3


def test_pointing_bad_input():
    cams = torch.zeros(1, 1, 4, 4)
    for tolerance in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="tolerance"):
            pointing_game(cams, [[(0, 0, 2, 2, 0)]], (4, 4), tolerance=tolerance)
    cams[0, 0, 1, 1] = math.nan
    with pytest.raises(ValueError, match=r"cams\[0, 0\]"):
        pointing_game(cams, [[(0, 0, 2, 2, 0)]], (4, 4))
    assert len(pointing_game(cams, [[]], (4, 4))) == 0  # unscored maps are not read
    assert len(energy_pointing_game(cams, [[]], (4, 4))) == 0


def test_energy_known_shares():
    cam = torch.zeros(1, 1, 6, 10)
    cam[0, 0, 1, 2] = 1.0
    cam[0, 0, 4, 8] = 1.0
    half = energy_pointing_game(cam, [[(2, 1, 1, 1, 0)]], (6, 10))
    assert half.value.tolist() == [0.5]
    cam[0, 0, 1, 3] = 0.5
    cam[0, 0, 0, 0] = -3.0  # negative: zero after the ReLU
    share = energy_pointing_game(cam, [[(2, 0, 3, 2, 0)]], (6, 10))  # cols 2..4, rows 0..1
    assert share.value.tolist() == [pytest.approx(1.5 / 2.5)]
    # min-max subtracts the minimum: a raised floor does not count
    lifted = energy_pointing_game(cam.relu() + 2.0, [[(2, 0, 3, 2, 0)]], (6, 10))
    assert lifted.value.tolist() == [pytest.approx(1.5 / 2.5)]


def test_energy_box_rows_are_y_columns_are_x():
    # Energy on rows 1..2 and columns 6..8: the box (x=6, y=1, w=3, h=2) holds all of it.
    for size in ((5, 12), (10, 10)):
        cam = torch.zeros(1, 1, *size)
        cam[0, 0, 1:3, 6:9] = 1.0
        right = energy_pointing_game(cam, [[(6, 1, 3, 2, 0)]], size)
        assert right.value.tolist() == [1.0]
    # The reference's transposed reading (empty[x1:x2, y1:y2]) scores rows 6..8, columns 1..2:
    # the box mirrored about the diagonal, which holds none of it.
    mirrored = energy_pointing_game(cam, [[(1, 6, 2, 3, 0)]], (10, 10))
    assert mirrored.value.tolist() == [0.0]


def test_energy_undefined_maps_are_nan_and_counted():
    cams = torch.zeros(4, 1, 4, 4)
    cams[1] = -1.0  # negative: all zero after the ReLU
    cams[2] = 0.7  # constant
    cams[3, 0, 0, 0] = 2.0  # defined
    boxes = [[(0, 0, 2, 2, 0)] for _ in range(4)]
    got = energy_pointing_game(cams, boxes, (8, 8))
    assert [math.isnan(v) for v in got.value.tolist()] == [True, True, True, False]
    summary = reduce_records(got, 1)
    assert summary["undefined"] == 3 and summary["n"] == 1
