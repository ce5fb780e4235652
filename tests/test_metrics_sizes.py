"""Size buckets against hand-computed cases (areas exactly on the edges), ``by_size`` against
hand-computed means, and the paper's pairs as records against ``LocalizationAccumulator``."""

import math

import pytest
import torch

from pylon.metrics import LocalizationAccumulator, score_pairs
from pylon.metrics.records import PairRecords, reduce_records
from pylon.metrics.sizes import by_size, records_from_pair_scores, size_buckets


def make_records(box_area, image_area, value=None, class_index=None, image_index=None):
    n = len(box_area)
    return PairRecords(
        image_index=torch.tensor(image_index if image_index is not None else list(range(n))),
        class_index=torch.tensor(class_index if class_index is not None else [0] * n),
        value=torch.tensor(value if value is not None else [1.0] * n, dtype=torch.float64),
        box_area=torch.tensor(box_area, dtype=torch.long),
        image_area=torch.tensor(image_area, dtype=torch.long),
    )


def test_size_buckets_edges_go_to_the_bigger_bucket():
    # 100 x 100 = 10,000 pixels: 1 % = 100 pixels, 10 % = 1,000 pixels.
    # 300 x 300 = 90,000 pixels: 1 % = 900, 10 % = 9,000.
    # 7 x 13 = 91 pixels: no integer area is exactly 1 % or 10 %.
    areas = [0, 99, 100, 101, 999, 1000, 1001, 10000, 899, 900, 8999, 9000, 0, 1, 9, 10]
    images = [10000] * 8 + [90000] * 4 + [91] * 4
    expected = [0, 0, 1, 1, 1, 2, 2, 2, 0, 1, 1, 2, 0, 1, 1, 2]
    # 1/91 = 1.1 % (medium), 9/91 = 9.9 % (medium), 10/91 = 11 % (large).
    bucket = size_buckets(make_records(areas, images))
    assert bucket.dtype == torch.long
    assert bucket.tolist() == expected


def test_size_buckets_custom_edges_and_names():
    records = make_records([5, 10, 20, 30, 50, 99], [100] * 6)
    edges, names = (0.1, 0.3, 0.5), ("xs", "s", "m", "l")
    assert size_buckets(records, edges, names).tolist() == [0, 1, 1, 2, 3, 3]
    # An edge whose float is not its decimal (0.3 is stored below 3/10): 30 of 100 is on it.
    assert size_buckets(make_records([29, 30, 31], [100] * 3), (0.3,), ("a", "b")).tolist() == [
        0,
        1,
        1,
    ]


@pytest.mark.parametrize(
    "edges, names",
    [
        ((0.01, 0.1), ("a", "b")),  # too few names
        ((0.1, 0.01), ("a", "b", "c")),  # decreasing
        ((0.1, 0.1), ("a", "b", "c")),  # not strictly increasing
        ((0.0, 0.1), ("a", "b", "c")),  # not positive
        ((0.01, 0.1), ("a", "a", "c")),  # names repeat
    ],
)
def test_size_buckets_rejects_bad_buckets(edges, names):
    with pytest.raises(ValueError):
        size_buckets(make_records([1], [100]), edges, names)


def test_by_size_hand_case():
    # image 10,000 px; class 0 and 1; one NaN (left out, counted as undefined).
    records = make_records(
        box_area=[50, 60, 100, 500, 2000, 5000, 9999],
        image_area=[10000] * 7,
        value=[1.0, 0.0, 1.0, math.nan, 0.0, 1.0, 1.0],
        class_index=[0, 1, 0, 1, 0, 1, 1],
    )
    out = by_size(records, num_classes=3)
    assert list(out) == ["small", "medium", "large"]
    small, medium, large = out["small"], out["medium"], out["large"]
    assert small["n"] == 2 and small["pooled"] == 0.5 and small["macro"] == 0.5
    assert small["per_class"][:2].tolist() == [1.0, 0.0] and math.isnan(small["per_class"][2])
    assert medium["n"] == 1 and medium["undefined"] == 1 and medium["pooled"] == 1.0
    assert medium["n_per_class"].tolist() == [1, 0, 0]
    assert large["n"] == 3 and large["pooled"] == pytest.approx(2 / 3)
    assert large["per_class"][0] == 0.0 and large["per_class"][1] == 1.0
    assert large["macro"] == 0.5


def test_by_size_empty_bucket():
    out = by_size(make_records([5000], [10000]), 1)
    assert out["small"]["n"] == 0 and math.isnan(out["small"]["pooled"])
    assert out["large"]["n"] == 1


def random_batch(seed, num_images=6, num_classes=3, size=(32, 40)):
    gen = torch.Generator().manual_seed(seed)
    cams = torch.randn(num_images, num_classes, 8, 8, generator=gen)
    boxes = []
    for _ in range(num_images):
        image_boxes = []
        for _ in range(int(torch.randint(0, 4, (1,), generator=gen))):
            x, y = (float(v) for v in torch.randint(0, 30, (2,), generator=gen))
            w, h = (float(v) for v in torch.randint(1, 20, (2,), generator=gen))
            c = int(torch.randint(0, num_classes, (1,), generator=gen))
            image_boxes.append((x, y, w, h, c))
        boxes.append(image_boxes)
    return cams, boxes


def test_records_from_pair_scores_match_the_accumulator():
    num_classes, size = 3, (32, 40)
    acc = LocalizationAccumulator(num_classes, size, thresholds=(0.1, 0.25))
    parts = {"point": [], 0.1: [], 0.25: [], "iou0.25": []}
    offset = 0
    for seed in range(4):
        cams, boxes = random_batch(seed, size=size)
        scores = acc.update(cams, boxes)
        parts["point"].append(records_from_pair_scores(scores, size, image_offset=offset))
        for t in (0.1, 0.25):
            parts[t].append(
                records_from_pair_scores(
                    scores, size, value="iobb", threshold=t, image_offset=offset
                )
            )
        parts["iou0.25"].append(
            records_from_pair_scores(scores, size, value="iou", threshold=0.25, image_offset=offset)
        )
        offset += len(cams)
    expected = acc.compute()
    assert int(acc.pairs.sum()) > 10
    for key, prefix in [("point", "point_acc"), (0.1, "iobb0.1"), (0.25, "iobb0.25")]:
        out = reduce_records(PairRecords.cat(parts[key]), num_classes)
        assert out["pooled"] == pytest.approx(expected[f"{prefix}_weighted"], abs=1e-15)
        assert out["macro"] == pytest.approx(expected[f"{prefix}_macro"], abs=1e-15)
        assert out["undefined"] == 0
    out = reduce_records(PairRecords.cat(parts["iou0.25"]), num_classes)
    assert out["pooled"] == pytest.approx(expected["iou0.25_weighted"], abs=1e-15)
    # Global image indices: batch k's images follow the 6 k before.
    images = PairRecords.cat(parts["point"]).image_index
    assert int(images.max()) < offset and bool((images[1:] >= images[:-1]).all())


def test_records_from_pair_scores_areas_and_ratios():
    size = (20, 30)
    cams = torch.zeros(2, 2, 4, 4)
    cams[0, 0, 0, 0] = 5.0  # peak top left: inside the box of image 0
    boxes = [[(0.0, 0.0, 10.0, 5.0, 0)], [(4.0, 2.0, 3.0, 3.0, 1), (5.0, 3.0, 3.0, 3.0, 1)]]
    scores = score_pairs(cams, boxes, size, apply_sigmoid=False)
    records = records_from_pair_scores(scores, size)
    assert records.image_index.tolist() == [0, 1]
    assert records.class_index.tolist() == [0, 1]
    # 10 x 5 box; two 3 x 3 boxes overlapping in 2 x 2: 9 + 9 - 4 pixels.
    assert records.box_area.tolist() == [50, 14]
    assert records.image_area.tolist() == [600, 600]
    assert records.value.dtype == torch.float64
    assert records.value.tolist() == [1.0, 0.0]  # image 1's map is all zero: peak (0, 0), a miss
    ratio = records_from_pair_scores(scores, size, value="iobb")
    # Image 1's mask is empty: the ratio is undefined (NaN), the thresholded hit a miss.
    assert math.isnan(float(ratio.value[1]))
    hit = records_from_pair_scores(scores, size, value="iobb", threshold=0.1)
    assert float(hit.value[1]) == 0.0
    assert float(hit.value[0]) == float(float(scores.iobb[0]) > 0.1)


def test_records_from_pair_scores_rejects_bad_arguments():
    cams, boxes = random_batch(0)
    scores = score_pairs(cams, boxes, (32, 40))
    with pytest.raises(ValueError):
        records_from_pair_scores(scores, (32, 40), value="energy")
    with pytest.raises(ValueError):
        records_from_pair_scores(scores, (32, 40), threshold=0.5)
    with pytest.raises(ValueError):
        records_from_pair_scores(scores, (32, 40), value="iou", threshold=1.0)
