"""Localization metrics against a naive per-pixel reference written from the spec, hand cases."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pylon.metrics import LocalizationAccumulator, localization_accuracy, score_pairs

THRESHOLDS = (0.1, 0.25, 0.5)


def naive_pair(cam: np.ndarray, cls_boxes, height: int, width: int):
    """One (image, class) pair straight from the spec, loops over pixels.

    The sigmoid is torch's float32 one: near the border, clamped bilinear samples tie up to one ulp,
    so an ulp of difference in the probabilities could legitimately move the arg-max.
    """
    prob = torch.from_numpy(cam).float().sigmoid().numpy()
    up = F.interpolate(
        torch.from_numpy(prob)[None, None],
        size=(height, width),
        mode="bilinear",
        align_corners=False,
    )[0, 0].numpy()
    best, peak = -math.inf, None
    for r in range(height):
        for c in range(width):
            if up[r, c] > best:  # strict: the first maximum in row-major order wins
                best, peak = up[r, c], (r, c)
    row, col = peak
    point_hit = any(x <= col <= x + w and y <= row <= y + h for x, y, w, h, _ in cls_boxes)
    scaled = up / np.float32(best)
    gt = np.zeros((height, width), dtype=bool)
    for x, y, w, h, _ in cls_boxes:
        x0, y0, w0, h0 = int(x), int(y), int(w), int(h)
        for r in range(y0, y0 + h0):
            for c in range(x0, x0 + w0):
                if 0 <= r < height and 0 <= c < width:
                    gt[r, c] = True
    inter = mask_area = union = 0
    for r in range(height):
        for c in range(width):
            m = bool(scaled[r, c] > 0.5)
            inter += m and gt[r, c]
            mask_area += m
            union += m or gt[r, c]
    iobb = inter / mask_area if mask_area else math.nan
    iou = inter / union if union else math.nan
    return peak, point_hit, iobb, iou


def naive_metrics(cams: np.ndarray, boxes, height, width, names):
    """Per-class hit lists, then weighted / macro / per-class accuracies as the spec defines."""
    hits: dict[str, dict[int, list[bool]]] = {}
    pairs = []
    for i in range(cams.shape[0]):
        for c in range(cams.shape[1]):
            cls_boxes = [b for b in boxes[i] if b[4] == c]
            if not cls_boxes:
                continue
            peak, point_hit, iobb, iou = naive_pair(cams[i, c], cls_boxes, height, width)
            pairs.append((i, c, peak, point_hit, iobb, iou))
            hits.setdefault("point_acc", {}).setdefault(c, []).append(point_hit)
            for t in THRESHOLDS:
                hits.setdefault(f"iobb{t:g}", {}).setdefault(c, []).append(iobb > t)
                hits.setdefault(f"iou{t:g}", {}).setdefault(c, []).append(iou > t)
    out = {}
    for prefix, by_class in hits.items():
        every = [h for c in sorted(by_class) for h in by_class[c]]
        out[f"{prefix}_weighted"] = sum(every) / len(every)
        out[f"{prefix}_macro"] = float(np.mean([np.mean(v) for v in by_class.values()]))
        for c, v in by_class.items():
            out[f"{prefix}_{names[c]}"] = sum(v) / len(v)
    return out, pairs


def random_case(seed: int, height=37, width=53, num_images=6, num_classes=4):
    """Random maps and boxes: fractional, overlapping, touching or crossing the border."""
    rng = np.random.default_rng(seed)
    cams = rng.normal(0, 2, size=(num_images, num_classes, 7, 9)).astype(np.float32)
    boxes = []
    for _ in range(num_images):
        image_boxes = []
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(-3, width), rng.uniform(-3, height)
            w, h = rng.uniform(0, width / 2), rng.uniform(0, height / 2)
            image_boxes.append((x, y, w, h, int(rng.integers(num_classes))))
        if image_boxes and rng.random() < 0.5:  # an overlapping box of the same class
            x, y, w, h, c = image_boxes[0]
            image_boxes.append((x + w / 3, y + h / 3, w, h, c))
        if rng.random() < 0.3:  # touching the right and bottom borders exactly
            image_boxes.append((width - 10.0, height - 8.0, 10.0, 8.0, 0))
        boxes.append(image_boxes)
    return cams, boxes


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_naive_reference(seed):
    height, width = 37, 53
    cams, boxes = random_case(seed, height, width)
    names = ["a", "b", "c", "d"]
    expected, pairs = naive_metrics(cams, boxes, height, width, names)
    got = localization_accuracy(torch.from_numpy(cams), boxes, (height, width), class_names=names)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key

    scores = score_pairs(cams, boxes, (height, width))
    assert len(scores) == len(pairs)
    for k, (i, c, peak, point_hit, iobb, iou) in enumerate(pairs):
        assert (int(scores.image_index[k]), int(scores.class_index[k])) == (i, c)
        assert (int(scores.peak_row[k]), int(scores.peak_col[k])) == peak
        assert bool(scores.point_hit[k]) == point_hit
        np.testing.assert_equal(float(scores.iobb[k]), iobb)
        np.testing.assert_equal(float(scores.iou[k]), iou)


def test_probabilities_without_sigmoid_match_raw_scores():
    cams, boxes = random_case(5)
    raw = localization_accuracy(cams, boxes, (37, 53))
    probs = localization_accuracy(
        torch.from_numpy(cams).sigmoid(), boxes, (37, 53), apply_sigmoid=False
    )
    assert raw == probs


# Hand example: raw 2x2 cam [[-5, -5], [-5, 5]] up-sampled to 8x8. Along each axis output pixel d
# samples source position (d + 0.5) / 4 - 0.5, i.e. weight on the second source pixel
# lam = [0, 0, .125, .375, .625, .875, 1, 1]; up = a + (b - a) * lam_r * lam_c with a = sigmoid(-5),
# b = sigmoid(5). The maximum b is reached at rows/cols 6..7, first in row-major order: (6, 6).
# Scaled by b, a pixel is in the mask when lam_r * lam_c > (b/2 - a) / (b - a) = 0.4966: that is
# rows 4..7 x cols 4..7 except (4, 4) (0.625 * 0.625 = 0.39): 15 pixels.
HAND_CAM = torch.tensor([[[[-5.0, -5.0], [-5.0, 5.0]]]])


@pytest.mark.parametrize(
    "box, hit",
    [
        ((6, 6, 0, 0), True),  # a zero-size box exactly on the peak
        ((2, 2, 4, 4), True),  # x + w = 6 = col: the far edge is inclusive
        ((2, 2, 3.99, 4), False),  # x + w just short of the peak column
        ((6.01, 0, 2, 8), False),  # x just past the peak column
        ((0, 0, 8, 5.99), False),  # y + h just short of the peak row
        ((7, 7, 1, 1), False),
    ],
)
def test_hand_point_hits(box, hit):
    scores = score_pairs(HAND_CAM, [[(*box, 0)]], (8, 8))
    assert (int(scores.peak_row[0]), int(scores.peak_col[0])) == (6, 6)
    assert bool(scores.point_hit[0]) is hit


@pytest.mark.parametrize(
    "boxes, iobb, iou",
    [
        ([(4, 4, 4, 4)], 15 / 15, 15 / 16),
        ([(6, 6, 2, 2)], 4 / 15, 4 / 15),
        ([(6.9, 6.9, 1.9, 1.9)], 1 / 15, 1 / 15),  # truncated to one pixel (6, 6)
        ([(0, 0, 2, 2)], 0.0, 0.0),
        ([(0, 0, 2, 2), (5, 5, 10, 10)], 9 / 15, 9 / 19),  # union; the second crosses the border
        ([(4, 4, 2, 4), (4, 4, 4, 2)], 11 / 15, 11 / 16),  # overlapping boxes count once
    ],
)
def test_hand_iobb_iou(boxes, iobb, iou):
    scores = score_pairs(HAND_CAM, [[(*b, 0) for b in boxes]], (8, 8))
    assert float(scores.iobb[0]) == pytest.approx(iobb, abs=1e-15)
    assert float(scores.iou[0]) == pytest.approx(iou, abs=1e-15)
    got = localization_accuracy(HAND_CAM, [[(*b, 0) for b in boxes]], (8, 8))
    for t in THRESHOLDS:
        assert got[f"iobb{t:g}_0"] == float(iobb > t)
        assert got[f"iou{t:g}_0"] == float(iou > t)


def test_ties_break_to_first_pixel_in_row_major_order():
    cams = torch.zeros(1, 1, 3, 3)
    scores = score_pairs(cams, [[(0, 0, 0, 0, 0)]], (12, 9))
    assert (int(scores.peak_row[0]), int(scores.peak_col[0])) == (0, 0)
    assert bool(scores.point_hit[0])


def test_weighted_macro_and_omitted_classes():
    # class 0: two pairs (one hit), class 2: one pair (hit), classes 1 and 3: no boxes.
    cams = HAND_CAM.repeat(3, 4, 1, 1)
    boxes = [[(6, 6, 1, 1, 0)], [(0, 0, 1, 1, 0), (5, 5, 2, 2, 2)], []]
    got = localization_accuracy(cams, boxes, (8, 8), class_names=["p", "q", "r", "s"])
    assert got["point_acc_p"] == 0.5
    assert got["point_acc_r"] == 1.0
    assert got["point_acc_weighted"] == pytest.approx(2 / 3)
    assert got["point_acc_macro"] == pytest.approx(0.75)
    assert not any(k.endswith(("_q", "_s")) for k in got)


def test_streaming_chunks_and_merge_equal_one_shot():
    cams, boxes = random_case(7, num_images=10)
    one_shot = localization_accuracy(cams, boxes, (37, 53))

    streamed = LocalizationAccumulator(4, (37, 53), chunk_pairs=1)
    for start in range(0, 10, 3):
        streamed.update(cams[start : start + 3], boxes[start : start + 3])
    assert streamed.compute() == one_shot

    first, second = LocalizationAccumulator(4, (37, 53)), LocalizationAccumulator(4, (37, 53))
    first.update(cams[:4], boxes[:4])
    second.update(cams[4:], boxes[4:])
    summed = {k: v + second.counts()[k] for k, v in first.counts().items()}
    assert LocalizationAccumulator.from_counts(summed, image_size=(37, 53)).compute() == one_shot
    assert first.merge(second).compute() == one_shot


def test_no_boxes_gives_nan_with_warning():
    acc = LocalizationAccumulator(2, (8, 8))
    acc.update(torch.zeros(2, 2, 2, 2), [[], []])
    with pytest.warns(UserWarning, match="no ground-truth boxes"):
        got = acc.compute()
    assert math.isnan(got["point_acc_weighted"])


@pytest.mark.parametrize(
    "boxes, match",
    [
        ([[(1, 1, 2, 2, 0)]], "2 images"),
        ([[(1, 1, 2, 2)], []], r"boxes\[0\]\[0\]"),
        ([[], [(1, 1, -2, 2, 0)]], r"boxes\[1\]\[0\].*width and height"),
        ([[], [(1, 1, 2, 2, 5)]], r"boxes\[1\]\[0\].*class_index"),
        ([[(1, float("nan"), 2, 2, 0)], []], "finite"),
    ],
)
def test_bad_boxes_raise_clear_errors(boxes, match):
    with pytest.raises(ValueError, match=match):
        localization_accuracy(torch.zeros(2, 2, 4, 4), boxes, (8, 8))


def test_bad_cams_raise_clear_errors():
    with pytest.raises(ValueError, match="NaN"):
        localization_accuracy(torch.full((1, 1, 2, 2), float("nan")), [[(0, 0, 1, 1, 0)]], (8, 8))
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        localization_accuracy(torch.zeros(1, 2, 2), [[]], (8, 8))
    with pytest.raises(ValueError, match="apply_sigmoid"):
        localization_accuracy(
            -torch.ones(1, 1, 2, 2), [[(0, 0, 1, 1, 0)]], (8, 8), apply_sigmoid=False
        )


# --- The cell-wise evaluation (pylon.metrics.bilinear / scoring) against dense references. ---


def dense_pair(prob: torch.Tensor, cls_boxes, height: int, width: int):
    """Like ``naive_pair`` on torch's float32 up-sampled map, with numpy instead of pixel loops."""
    up = F.interpolate(prob[None, None].float(), size=(height, width), mode="bilinear")[0, 0]
    up = up.numpy()
    row, col = divmod(int(np.argmax(up)), width)  # numpy: the first maximum, row-major
    point_hit = any(x <= col <= x + w and y <= row <= y + h for x, y, w, h, _ in cls_boxes)
    with np.errstate(invalid="ignore"):  # an all-zero map: 0 / 0, no mask
        mask = up / up.max() > 0.5
    gt = np.zeros((height, width), dtype=bool)
    for x, y, w, h, _ in cls_boxes:
        x0, y0 = max(int(x), 0), max(int(y), 0)
        gt[y0 : max(int(y) + int(h), 0), x0 : max(int(x) + int(w), 0)] = True
    inter, area, union = int((mask & gt).sum()), int(mask.sum()), int((mask | gt).sum())
    iobb = inter / area if area else math.nan
    iou = inter / union if union else math.nan
    return (row, col), point_hit, iobb, iou


def assert_matches_dense(probs: torch.Tensor, boxes, height: int, width: int):
    """score_pairs on probabilities (N, C, h, w) equals dense_pair for every scored pair."""
    scores = score_pairs(probs, boxes, (height, width), apply_sigmoid=False)
    assert len(scores) > 0
    for k in range(len(scores)):
        i, c = int(scores.image_index[k]), int(scores.class_index[k])
        cls_boxes = [b for b in boxes[i] if b[4] == c]
        peak, hit, iobb, iou = dense_pair(probs[i, c], cls_boxes, height, width)
        where = f"pair {k} (image {i}, class {c})"
        assert (int(scores.peak_row[k]), int(scores.peak_col[k])) == peak, where
        assert bool(scores.point_hit[k]) == hit, where
        np.testing.assert_equal(float(scores.iobb[k]), iobb, err_msg=where)
        np.testing.assert_equal(float(scores.iou[k]), iou, err_msg=where)


def random_boxes(rng, num_images: int, num_classes: int, height: int, width: int):
    """Boxes of every size: single pixels, zero-size, huge, off the image, the whole image."""
    boxes = []
    for _ in range(num_images):
        image_boxes = []
        for c in range(num_classes):
            kind = rng.integers(5)
            if kind == 0:
                image_boxes.append((0.0, 0.0, float(width), float(height), c))
            elif kind == 1:  # small, possibly zero-size or a single pixel
                x, y = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
                image_boxes.append((x, y, float(rng.integers(0, 3)), float(rng.integers(0, 3)), c))
            else:
                for _ in range(rng.integers(1, 4)):
                    x, y = rng.uniform(-width / 4, width), rng.uniform(-height / 4, height)
                    w, h = rng.uniform(0, width), rng.uniform(0, height)
                    image_boxes.append((x, y, w, h, c))
        boxes.append(image_boxes)
    return boxes


@pytest.mark.parametrize(
    "map_size, image_size",
    [
        ((13, 11), (50, 29)),  # non-integer ratios, small output (torch's vectorised kernel)
        ((40, 24), (150, 100)),  # non-integer ratios, large output (torch's generic kernel)
        ((32, 16), (128, 64)),  # integer ratio, sides a multiple of the block size
        ((20, 24), (9, 15)),  # down-sampling
        ((17, 30), (17, 61)),  # identity along y
        ((1, 6), (5, 40)),  # a single source row
    ],
)
def test_scale_ratios_match_dense_reference(map_size, image_size):
    rng = np.random.default_rng(sum(map_size) + sum(image_size))
    probs = torch.from_numpy(rng.normal(0, 2, size=(4, 3, *map_size))).float().sigmoid()
    boxes = random_boxes(rng, 4, 3, *image_size)
    assert_matches_dense(probs, boxes, *image_size)


@pytest.mark.parametrize("image_size", [(24, 40), (96, 120)])
@pytest.mark.parametrize("kind", ["constant", "repeated_max", "quantised", "saturated", "zero"])
def test_plateaus_and_ties_match_dense_reference(kind, image_size):
    rng = np.random.default_rng(len(kind))
    raw = torch.from_numpy(rng.normal(0, 1.5, size=(3, 2, 12, 10))).float()
    if kind == "constant":
        probs = torch.full_like(raw, 0.3)
    elif kind == "repeated_max":  # the maximum at several separate pixels and a 2x2 block
        probs = raw.sigmoid()
        top = probs.amax() + 0.05
        probs[:, :, 2, 3] = probs[:, :, 7, 1] = probs[:, :, 4:6, 6:8] = top
        probs[:, :, 11, 9] = top  # and in the corner repeated past the border
    elif kind == "quantised":
        probs = (torch.round(raw * 4) / 4).sigmoid()
    elif kind == "saturated":  # float32 sigmoid rounds to exactly 1.0
        probs = (raw * 30).sigmoid()
    else:
        probs = torch.zeros_like(raw)
    boxes = random_boxes(rng, 3, 2, *image_size)
    assert_matches_dense(probs, boxes, *image_size)


def exact_bilinear(source: np.ndarray, height: int, width: int) -> np.ndarray:
    """Float64 bilinear up-sampling written from the spec (align_corners=False)."""

    def axis(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), src - i0

    y0, y1, ly = axis(source.shape[0], height)
    x0, x1, lx = axis(source.shape[1], width)
    top = source[y0][:, x0] * (1 - lx) + source[y0][:, x1] * lx
    bottom = source[y1][:, x0] * (1 - lx) + source[y1][:, x1] * lx
    return top * (1 - ly[:, None]) + bottom * ly[:, None]


@pytest.mark.parametrize("map_size, image_size", [((7, 9), (37, 53)), ((16, 24), (64, 50))])
def test_cells_cover_the_image_with_bilinear_values_within_bounds(map_size, image_size):
    from pylon.metrics.bilinear import (
        BLOCK,
        axis_plan,
        block_bounds,
        cell_bounds,
        cell_pixels,
        pad_edges,
    )

    rng = np.random.default_rng(0)
    maps = torch.from_numpy(rng.uniform(0, 1, size=(2, *map_size))).float()
    rows = axis_plan(map_size[0], image_size[0], maps.device, -2)
    cols = axis_plan(map_size[1], image_size[1], maps.device, -1)
    padded = pad_edges(maps, rows, cols)
    block_min, block_max = block_bounds(padded)
    pair, by, bx = torch.ones_like(block_min, dtype=torch.bool).nonzero(as_tuple=True)
    cell_min, cell_max = cell_bounds(padded, rows, cols, pair, by, bx)
    k, i, j = torch.ones_like(cell_min, dtype=torch.bool).nonzero(as_tuple=True)
    gy, gx = by[k] * BLOCK + i, bx[k] * BLOCK + j
    pixels = cell_pixels(padded, rows, cols, pair[k], gy, gx)

    seen = np.zeros((2, *image_size), dtype=int)
    for n in range(len(k)):
        valid = np.ones(pixels.values[n].shape, bool)
        if pixels.valid is not None:
            valid = pixels.valid[n].numpy()
        if not valid.any():
            continue
        p, r, c = int(pair[k[n]]), pixels.rows[n].numpy(), pixels.cols[n].numpy()
        values = pixels.values[n].numpy()
        expected = exact_bilinear(maps[p].double().numpy(), *image_size)[np.ix_(r, c)]
        # torch's float32 interpolation weights against the spec's float64 ones
        np.testing.assert_allclose(values[valid], expected[valid], atol=1e-6)
        assert (values[valid] >= float(cell_min[k[n], i[n], j[n]])).all()
        assert (values[valid] <= float(cell_max[k[n], i[n], j[n]])).all()
        assert (values[valid] >= float(block_min[p, by[k[n]], bx[k[n]]])).all()
        assert (values[valid] <= float(block_max[p, by[k[n]], bx[k[n]]])).all()
        rr, cc = np.broadcast_arrays(r[:, None], c[None, :])
        np.add.at(seen[p], (rr[valid], cc[valid]), 1)
    assert (seen == 1).all()  # every output pixel belongs to exactly one cell
