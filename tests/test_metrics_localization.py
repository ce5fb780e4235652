"""Localization metrics against per-map loops written here from the spec, and hand cases.

The spec (shared/README.md section 4): ``sigmoid(cam)`` in float32, up-sampled one map at a time
with ``F.interpolate(bilinear, align_corners=False)``; the peak is the flat arg-max (first maximum
in row-major order); a point hit if ``x <= col <= x + w and y <= row <= y + h`` for a box; the mask
is ``up / up.max() > 0.5``; a box covers rows ``int(y) .. int(y)+int(h)-1`` and columns
``int(x) .. int(x)+int(w)-1``.

Maps given as raw scores have ``h * w`` a multiple of 64 here: torch's float32 CPU sigmoid rounds
its vectorised body and its scalar tail differently (by an ulp), so a map put through the sigmoid
alone and inside a batch agree bit for bit only when no element falls in a tail. Odd map sizes are
tested with probabilities (``apply_sigmoid=False``).
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pylon.metrics import (
    LocalizationAccumulator,
    localization_accuracy,
    peak_locations,
    score_pairs,
)
from pylon.metrics.pairs import half_peak_threshold

THRESHOLDS = (0.1, 0.25, 0.5)


def spec_pair(prob: torch.Tensor, cls_boxes, height: int, width: int):
    """One pair as the spec says: one ``F.interpolate``, flat arg-max, Python loops over boxes."""
    up = F.interpolate(
        prob[None, None].float(), size=(height, width), mode="bilinear", align_corners=False
    )[0, 0]
    row, col = divmod(int(up.flatten().argmax()), width)
    point_hit = False
    for x, y, w, h, _ in cls_boxes:
        if x <= col <= x + w and y <= row <= y + h:
            point_hit = True
    mask = up / up.max() > 0.5
    gt = torch.zeros(height, width, dtype=torch.bool)
    for x, y, w, h, _ in cls_boxes:
        x0, y0 = int(x), int(y)
        x1, y1 = x0 + int(w), y0 + int(h)
        gt[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    inter, area = int((mask & gt).sum()), int(mask.sum())
    union, gt_area = int((mask | gt).sum()), int(gt.sum())
    return (row, col), point_hit, area, inter, gt_area, union


def spec_pixel_loop(prob: np.ndarray, cls_boxes, height: int, width: int):
    """Like ``spec_pair`` but every step after the up-sampling is a loop over pixels."""
    up = F.interpolate(torch.from_numpy(prob)[None, None], size=(height, width), mode="bilinear")[
        0, 0
    ].numpy()
    best, peak = -math.inf, None
    for r in range(height):
        for c in range(width):
            if up[r, c] > best:  # strict: the first maximum in row-major order wins
                best, peak = up[r, c], (r, c)
    row, col = peak
    point_hit = any(x <= col <= x + w and y <= row <= y + h for x, y, w, h, _ in cls_boxes)
    gt = np.zeros((height, width), dtype=bool)
    for x, y, w, h, _ in cls_boxes:
        for r in range(int(y), int(y) + int(h)):
            for c in range(int(x), int(x) + int(w)):
                if 0 <= r < height and 0 <= c < width:
                    gt[r, c] = True
    inter = area = union = 0
    scaled = up / up.max()
    for r in range(height):
        for c in range(width):
            m = bool(scaled[r, c] > 0.5)
            inter += m and gt[r, c]
            area += m
            union += m or gt[r, c]
    iobb = inter / area if area else math.nan
    iou = inter / union if union else math.nan
    return peak, point_hit, iobb, iou


def assert_matches_spec(cams: torch.Tensor, boxes, height: int, width: int, apply_sigmoid=True):
    """``score_pairs`` equals ``spec_pair`` on every pair with boxes, and scores exactly those."""
    scores = score_pairs(cams, boxes, (height, width), apply_sigmoid=apply_sigmoid)
    expected = [
        (i, c)
        for i in range(cams.shape[0])
        for c in range(cams.shape[1])
        if any(b[4] == c for b in boxes[i])
    ]
    got = list(zip(scores.image_index.tolist(), scores.class_index.tolist(), strict=True))
    assert got == expected
    for k, (i, c) in enumerate(expected):
        prob = cams[i, c].sigmoid() if apply_sigmoid else cams[i, c]
        cls_boxes = [b for b in boxes[i] if b[4] == c]
        peak, hit, area, inter, gt_area, union = spec_pair(prob, cls_boxes, height, width)
        where = f"pair {k} (image {i}, class {c})"
        assert (int(scores.peak_row[k]), int(scores.peak_col[k])) == peak, where
        assert bool(scores.point_hit[k]) == hit, where
        assert int(scores.mask_area[k]) == area, where
        assert int(scores.intersection[k]) == inter, where
        assert int(scores.gt_area[k]) == gt_area, where
        assert int(scores.union[k]) == union, where
    return scores


def random_boxes(rng, num_images: int, num_classes: int, height: int, width: int):
    """Boxes of every kind: the whole image, single pixels, zero-size, fractional, overlapping,
    crossing the border, touching it from inside and from outside."""
    boxes = []
    for _ in range(num_images):
        image_boxes = []
        for c in range(num_classes):
            kind = rng.integers(6)
            if kind == 0:
                image_boxes.append((0.0, 0.0, float(width), float(height), c))
            elif kind == 1:  # small, possibly zero-size or a single pixel
                x, y = rng.uniform(0, width - 1), rng.uniform(0, height - 1)
                image_boxes.append((x, y, float(rng.integers(0, 3)), float(rng.integers(0, 3)), c))
            elif kind == 2:  # on the right / bottom border, and ending on the left / top edge
                image_boxes.append((width - 5.0, height - 4.0, 5.0, 4.0, c))
                image_boxes.append((-6.0, -3.5, 6.0, 3.5, c))
            elif kind == 3:
                continue
            else:
                for _ in range(rng.integers(1, 4)):
                    w, h = rng.uniform(0, width), rng.uniform(0, height)
                    x, y = rng.uniform(-w / 2, width - 1), rng.uniform(-h / 2, height - 1)
                    image_boxes.append((x, y, w, h, c))
        boxes.append(image_boxes)
    return boxes


def plateau_cams(kind: str, rng, shape=(3, 2, 8, 16)) -> torch.Tensor:
    """Raw scores with the ties real maps have."""
    raw = torch.from_numpy(rng.normal(0, 1.5, size=shape)).float()
    if kind == "saturated":  # logits > 17: float32 sigmoid is exactly 1.0 over whole regions
        raw[:, :, 2:6, 3:12] += 25
        raw[:, 1, 0, :] = 40  # and along the top border
    elif kind == "saturated_everywhere":
        raw = raw.abs() + 18
    elif kind == "constant":
        raw = torch.full(shape, -0.7)
    elif kind == "repeated_max":  # the maximum at separate pixels, a 2x2 block, a corner
        top = raw.amax() + 0.5
        raw[:, :, 2, 3] = raw[:, :, 7, 1] = raw[:, :, 4:6, 6:8] = raw[:, :, -1, -1] = top
    elif kind == "quantised":
        raw = torch.round(raw * 2) / 2
    return raw


@pytest.mark.parametrize("image_size", [(40, 72), (67, 29), (64, 64)])
@pytest.mark.parametrize(
    "kind", ["random", "saturated", "saturated_everywhere", "constant", "repeated_max", "quantised"]
)
def test_raw_maps_match_the_spec(kind, image_size):
    rng = np.random.default_rng(len(kind) * 100 + image_size[0])
    cams = plateau_cams(kind, rng)
    boxes = random_boxes(rng, 3, 2, *image_size)
    assert_matches_spec(cams, boxes, *image_size)


def test_saturated_maps_have_ties_and_still_match():
    """The case the spec is about: many pixels exactly at the maximum."""
    rng = np.random.default_rng(3)
    cams = plateau_cams("saturated", rng)
    up = F.interpolate(cams[:1, :1].sigmoid(), size=(40, 72), mode="bilinear")
    assert int((up == up.max()).sum()) > 50
    assert_matches_spec(cams, random_boxes(rng, 3, 2, 40, 72), 40, 72)


@pytest.mark.parametrize(
    "map_size, image_size",
    [
        ((7, 9), (37, 53)),  # non-integer ratios, non-square
        ((13, 11), (50, 29)),
        ((40, 24), (150, 100)),
        ((20, 24), (9, 15)),  # down-sampling
        ((1, 6), (5, 40)),  # a single source row
        ((16, 16), (64, 64)),  # the paper's 4x
    ],
)
@pytest.mark.parametrize("kind", ["random", "saturated"])
def test_probability_maps_of_any_size_match_the_spec(map_size, image_size, kind):
    rng = np.random.default_rng(sum(map_size) + sum(image_size))
    raw = rng.normal(0, 2, size=(3, 3, *map_size))
    if kind == "saturated":
        raw = raw * 15
    probs = torch.from_numpy(raw).float().sigmoid()
    boxes = random_boxes(rng, 3, 3, *image_size)
    assert_matches_spec(probs, boxes, *image_size, apply_sigmoid=False)


def test_pixel_loop_reference_gives_the_same_accuracies():
    rng = np.random.default_rng(11)
    height, width = 37, 53
    cams = rng.normal(0, 2, size=(5, 3, 8, 8)).astype(np.float32)
    boxes = random_boxes(rng, 5, 3, height, width)
    names = ["a", "b", "c"]
    hits: dict[str, dict[int, list[bool]]] = {}
    for i in range(5):
        for c in range(3):
            cls_boxes = [b for b in boxes[i] if b[4] == c]
            if not cls_boxes:
                continue
            prob = torch.from_numpy(cams[i, c]).sigmoid().numpy()
            _, point_hit, iobb, iou = spec_pixel_loop(prob, cls_boxes, height, width)
            hits.setdefault("point_acc", {}).setdefault(c, []).append(point_hit)
            for t in THRESHOLDS:
                hits.setdefault(f"iobb{t:g}", {}).setdefault(c, []).append(iobb > t)
                hits.setdefault(f"iou{t:g}", {}).setdefault(c, []).append(iou > t)
    expected = {}
    for prefix, by_class in hits.items():
        every = [h for c in sorted(by_class) for h in by_class[c]]
        expected[f"{prefix}_weighted"] = sum(every) / len(every)
        expected[f"{prefix}_macro"] = float(np.mean([np.mean(v) for v in by_class.values()]))
        for c, v in by_class.items():
            expected[f"{prefix}_{names[c]}"] = sum(v) / len(v)
    got = localization_accuracy(cams, boxes, (height, width), class_names=names)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_half_peak_threshold_equals_division():
    """``v > c(peak)`` decides exactly as ``v / peak > 0.5`` in float32, ties and subnormals too."""
    rng = np.random.default_rng(0)
    exponents = rng.integers(-140, 3, size=400)
    peak = torch.from_numpy(rng.uniform(0.5, 1, size=400) * 2.0**exponents).float()
    peak = torch.cat([peak, torch.tensor([1.0, 0.5, 1e-45, 2e-38, 0.9999999, 3.0])])
    half = peak / 2
    candidates = [half]
    for direction in (math.inf, -math.inf):
        v = half
        for _ in range(4):
            v = torch.nextafter(v, torch.full_like(v, direction))
            candidates.append(v)
    values = torch.stack(candidates, dim=1)  # (P, 9): around each half peak, ulp by ulp
    values = torch.cat([values, peak[:, None] * torch.rand(len(peak), 50)], dim=1)
    c = half_peak_threshold(peak)
    assert torch.equal(values / peak[:, None] > 0.5, values > c[:, None])
    assert bool(((values / peak[:, None] > 0.5) != (values > half[:, None])).any())


def test_mask_at_exactly_half_the_peak_matches_the_division():
    """Values a few ulp around peak / 2, at the input size (the up-sampling is then the identity):
    the mask is what ``up / up.max() > 0.5`` in float32 says. That is ``up > max / 2`` while
    ``max / 2`` is exact, not for subnormal peaks (all-but-zero maps, such as sigmoid of logits
    below -87), where ``max / 2`` rounds."""
    rng = np.random.default_rng(4)
    tiny = 2.0**-149  # the smallest float32
    peak = torch.tensor([0.7731, 0.3, 1.0, 2.0**-30, 3e-39, 7 * tiny, 1027 * tiny]).float()
    maps = torch.empty(len(peak), 8, 9)
    for k, m in enumerate(peak):
        around = [m / 2]
        for direction in (1.0, -1.0):
            v = m / 2
            for _ in range(8):
                v = torch.nextafter(v, torch.tensor(direction * math.inf)).clamp(min=0)
                around.append(v)
        values = torch.stack(around + [m] * 3)
        maps[k] = values[torch.from_numpy(rng.integers(len(values), size=(8, 9)))]
        maps[k, 0, 0] = m
    boxes = [[(2, 1, 4, 5, 0)] for _ in peak]
    scores = assert_matches_spec(maps[:, None], boxes, 8, 9, apply_sigmoid=False)
    naive = (maps > peak[:, None, None] / 2).flatten(1).sum(1)
    assert not torch.equal(scores.mask_area, naive)  # the case is a real one


@pytest.mark.parametrize("cams_shape", [(3, 4, 8, 8), (5, 4, 16), (2, 3, 6, 10)])
def test_peak_locations_is_the_flat_argmax(cams_shape):
    rng = np.random.default_rng(len(cams_shape))
    raw = torch.from_numpy(rng.normal(0, 3, size=cams_shape)).float()
    raw[..., :2, :3] += 30  # a saturated plateau
    size = (45, 70)
    raw_input = len(cams_shape) == 3  # h * w = 64; the others are given as probabilities
    maps = raw if raw_input else raw.sigmoid()
    rows, cols = peak_locations(maps, size, apply_sigmoid=raw_input)
    assert rows.shape == cols.shape == raw.shape[:-2]
    for index in np.ndindex(*raw.shape[:-2]):
        prob = raw[index].sigmoid() if raw_input else maps[index]
        up = F.interpolate(prob[None, None], size=size, mode="bilinear", align_corners=False)
        expected = divmod(int(up.flatten().argmax()), size[1])
        assert (int(rows[index]), int(cols[index])) == expected, index
    # and as the metric sees it, chunk by chunk
    chunked = peak_locations(maps, size, apply_sigmoid=raw_input, chunk_bytes=1)
    assert torch.equal(chunked[0], rows) and torch.equal(chunked[1], cols)


def test_peak_locations_refuses_nan():
    cams = torch.zeros(2, 3, 4, 4)
    cams[1, 2, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"cams\[1, 2\] contains NaN"):
        peak_locations(cams, (8, 8))


def test_probabilities_without_sigmoid_match_raw_scores():
    rng = np.random.default_rng(5)
    cams = torch.from_numpy(rng.normal(0, 2, size=(4, 3, 8, 8))).float()
    boxes = random_boxes(rng, 4, 3, 37, 53)
    raw = localization_accuracy(cams, boxes, (37, 53))
    probs = localization_accuracy(cams.sigmoid(), boxes, (37, 53), apply_sigmoid=False)
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


def test_batches_chunks_and_merge_equal_one_shot():
    rng = np.random.default_rng(7)
    cams = torch.from_numpy(rng.normal(0, 4, size=(10, 4, 8, 8))).float()
    cams[:, :, 1:4, 2:5] += 20  # saturated plateaus
    boxes = random_boxes(rng, 10, 4, 37, 53)
    one_shot = localization_accuracy(cams, boxes, (37, 53))
    pairs = score_pairs(cams, boxes, (37, 53))

    streamed = LocalizationAccumulator(4, (37, 53), chunk_bytes=1)  # one pair per chunk
    parts = [streamed.update(cams[s : s + 3], boxes[s : s + 3]) for s in range(0, 10, 3)]
    assert streamed.compute() == one_shot
    assert torch.equal(torch.cat([p.peak_row for p in parts]), pairs.peak_row)
    assert torch.equal(torch.cat([p.intersection for p in parts]), pairs.intersection)

    first, second = LocalizationAccumulator(4, (37, 53)), LocalizationAccumulator(4, (37, 53))
    first.update(cams[:4], boxes[:4])
    second.update(cams[4:], boxes[4:])
    summed = {k: v + second.counts()[k] for k, v in first.counts().items()}
    assert LocalizationAccumulator.from_counts(summed, image_size=(37, 53)).compute() == one_shot
    assert first.merge(second).compute() == one_shot


def test_autocast_does_not_change_the_result():
    rng = np.random.default_rng(8)
    cams = torch.from_numpy(rng.normal(0, 3, size=(4, 2, 8, 8))).float()
    boxes = random_boxes(rng, 4, 2, 64, 64)
    plain = localization_accuracy(cams, boxes, (64, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert localization_accuracy(cams, boxes, (64, 64)) == plain


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_matches_the_spec_on_the_gpu():
    rng = np.random.default_rng(9)
    cams = plateau_cams("saturated", rng, shape=(6, 3, 16, 16)).cuda()
    boxes = random_boxes(rng, 6, 3, 64, 96)
    scores = score_pairs(cams, boxes, (64, 96), chunk_bytes=64 * 96 * 12 * 4)
    for k in range(len(scores)):
        i, c = int(scores.image_index[k]), int(scores.class_index[k])
        up = F.interpolate(cams[i, c].sigmoid()[None, None], size=(64, 96), mode="bilinear")
        assert (int(scores.peak_row[k]), int(scores.peak_col[k])) == divmod(
            int(up.flatten().argmax()), 96
        )
        assert int(scores.mask_area[k]) == int((up / up.max() > 0.5).sum())
    cpu = score_pairs(cams.cpu(), boxes, (64, 96))
    assert torch.equal(cpu.point_hit, scores.point_hit)


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


@pytest.mark.parametrize(
    "box",
    [
        (8, 2, 3, 3),  # starts at x = W: right of the image
        (2, 10, 3, 3),  # below
        (-5, 2, 4.9, 3),  # ends just left of column 0
        (2, -3, 3, 2.5),  # ends just above row 0
        (1000, 1000, 5, 5),
    ],
)
def test_box_entirely_outside_the_image_is_refused(box):
    boxes = [[(1, 1, 2, 2, 0)], [(1, 1, 2, 2, 1), (*box, 1)]]
    message = r"boxes\[1\]\[1\] \(image 1, class 1\).*entirely outside the 10x8 image"
    with pytest.raises(ValueError, match=message):
        localization_accuracy(torch.zeros(2, 2, 4, 4), boxes, (10, 8))
    acc = LocalizationAccumulator(2, (10, 8))
    with pytest.raises(ValueError, match=message):
        acc.update(torch.zeros(2, 2, 4, 4), boxes)


@pytest.mark.parametrize("box", [(-5, 2, 5, 3), (7.9, 9.9, 4, 4), (-2, -2, 2, 2), (0, 0, 8, 10)])
def test_boxes_touching_the_image_are_scored(box):
    """``x + w == 0`` still holds column 0 for the point test; ``x < W`` meets the image."""
    cams = torch.randn(1, 1, 4, 4)
    scores = assert_matches_spec(cams, [[(*box, 0)]], 10, 8)
    assert len(scores) == 1


def test_bad_cams_raise_clear_errors():
    with pytest.raises(ValueError, match=r"cams\[0, 0\] contains NaN"):
        localization_accuracy(torch.full((1, 1, 2, 2), float("nan")), [[(0, 0, 1, 1, 0)]], (8, 8))
    with pytest.raises(ValueError, match=r"\(N, C, h, w\)"):
        localization_accuracy(torch.zeros(1, 2, 2), [[]], (8, 8))
    with pytest.raises(ValueError, match="apply_sigmoid"):
        localization_accuracy(
            -torch.ones(1, 1, 2, 2), [[(0, 0, 1, 1, 0)]], (8, 8), apply_sigmoid=False
        )
    # a NaN in a map without boxes is not read
    cams = torch.zeros(1, 2, 2, 2)
    cams[0, 1] = math.nan
    assert localization_accuracy(cams, [[(0, 0, 1, 1, 0)]], (8, 8))["point_acc_0"] == 1.0


def test_probabilities_above_one_are_refused_with_the_range_found():
    """Raw scores passed as probabilities (apply_sigmoid=False) are refused, not scored."""
    cams = torch.zeros(1, 2, 2, 2)
    cams[0, 0, 0, 0] = 3.5  # a logit, not a probability
    boxes = [[(0, 0, 1, 1, 0)]]
    with pytest.raises(ValueError, match=r"\[0, 1\].* from 0 to 3\.5"):
        localization_accuracy(cams, boxes, (8, 8), apply_sigmoid=False)
    acc = LocalizationAccumulator(2, (8, 8), apply_sigmoid=False)
    with pytest.raises(ValueError, match=r"from 0 to 3\.5"):
        acc.update(cams, boxes)
    cams[0, 1, 1, 1] = -0.25  # below 0 in a map without boxes
    cams[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError, match=r"from -0\.25 to 1"):
        localization_accuracy(cams, boxes, (8, 8), apply_sigmoid=False)
    cams[0, 1, 1, 1] = 0.0
    assert localization_accuracy(cams, boxes, (8, 8), apply_sigmoid=False)["point_acc_0"] == 1.0
