"""A ``pylon predict`` output folder browsed as cases: the case list against the JSONL records read
here, filters against list comprehensions over them, and the re-rendered overlay against images
whose findings are known by construction (a bright and a dark square)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from pylon import create_model, save_weights
from pylon.app.cases import CaseTable
from pylon.app.render import OverlayCache
from pylon.app.sources import open_sources
from pylon.cli.main import app
from pylon.models import ModelOutput, register_model

SIZE = 64
CLASSES = ["bright", "dark"]
HEIGHT, WIDTH, SIDE = 96, 128, 24
# image -> {class: top-left (x, y) of its square}, on grey 128: a "bright" square is lighter,
# a "dark" one darker (each value its own probability)
SQUARES = {
    "bright.png": {"bright": (80, 20)},
    "dark.png": {"dark": (16, 56)},
    "both.png": {"bright": (16, 16), "dark": (88, 60)},
}
VALUES = {"bright.png": {"bright": 255}, "dark.png": {"dark": 10}}
VALUES["both.png"] = {"bright": 220, "dark": 40}
THRESHOLD = 0.6


@register_model("_test_predict_cases_cam")
class SquaresCam(nn.Module):
    """CAM = +/- the 4x4 average-pooled input: class 0 peaks where the image is brightest, class 1
    where it is darkest, so each image's findings and peaks are known by construction."""

    def __init__(self, encoder="none", in_channels=1, num_classes=2, encoder_weights=None):
        super().__init__()
        self.head = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([1.0, -1.0])[:num_classes].view(-1, 1, 1, 1))

    def forward(self, x):
        cam = self.head(F.avg_pool2d(x, 4))
        return ModelOutput(cam.amax(dim=(2, 3)), cam)


def write_inputs(folder: Path) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    images = {}
    for name, squares in SQUARES.items():
        image = np.full((HEIGHT, WIDTH), 128, dtype=np.uint8)
        for cls, (x, y) in squares.items():
            image[y : y + SIDE, x : x + SIDE] = VALUES[name][cls]
        cv2.imwrite(str(folder / name), image)
        images[name] = image
    return images


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A `pylon predict` output of the three images (fp32, as the viewer renders), its weights
    and the records read here."""
    root = tmp_path_factory.mktemp("predict-cases")
    weights = root / "squares.safetensors"
    model = create_model("_test_predict_cases_cam", num_classes=2)
    data = {"class_names": CLASSES, "size": SIZE, "in_channels": 1, "mean": [0.5], "std": [0.25]}
    save_weights(model, weights, metadata={"pylon_data": data})
    write_inputs(root / "in")
    out = root / "out"
    result = CliRunner().invoke(
        app,
        ["predict", str(weights), str(root / "in"), "--out", str(out), "--no-overlays"]
        + ["--threshold", str(THRESHOLD), "--precision", "fp32", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    lines = (out / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return weights, out, records


def findings(records):
    """(image_id, class, probability, (x, y)) of every selected class, in record order."""
    return [
        (r["image_id"], c, r["probabilities"][c], tuple(r["peaks"][c]))
        for r in records
        for c in r["probabilities"]
        if c in r["selected"]
    ]


def listed(table: CaseTable):
    return [
        (c.image_id, c.class_name, c.probability, c.peak) for c in table.page(1, size=len(table))
    ]


def test_prediction_folder_cases_are_the_records_findings(predicted):
    weights, out, records = predicted
    # the model found each square (and nothing else) above the threshold
    assert {r["image_id"]: sorted(r["selected"]) for r in records} == {
        name: sorted(squares) for name, squares in SQUARES.items()
    }
    (source,) = open_sources([out])
    assert source.kind == "predict" and source.weights == weights.resolve()
    table = CaseTable.from_source(source)
    want = findings(records)
    assert len(table) == len(want) == 4
    assert listed(table) == want
    paths = {r["image_id"]: Path(r["path"]) for r in records}
    for case in table.page(1, size=10):
        assert case.hit is None and case.boxes == () and case.weights == source.weights
        assert case.image_path == paths[case.image_id]
    shown = table.as_dataframe()
    assert set(shown["result"]) == {"n/a"}
    assert table.classes == CLASSES and table.size_buckets == []

    # filters: class, probability range (both ends included), hit/miss (no ground truth)
    assert listed(table.filter(classes=["dark"])) == [w for w in want if w[1] == "dark"]
    probabilities = sorted(w[2] for w in want)
    low, high = probabilities[1], probabilities[2]
    assert listed(table.filter(prob_range=(low, high))) == [w for w in want if low <= w[2] <= high]
    assert len(table.filter(prob_range=(low, high))) == 2
    assert len(table.filter(hit="hit")) == 0 and len(table.filter(hit="miss")) == 0
    # without ground truth "confident and wrong first" is the confidence order
    by_confidence = sorted(want, key=lambda w: -w[2])
    assert listed(table.sort("confidence")) == by_confidence
    assert listed(table.sort("confident_wrong")) == by_confidence


def jet_values(rgb: np.ndarray) -> np.ndarray:
    """The map value (0..255) each pixel of an opacity-1 absolute overlay shows: the nearest
    entry of OpenCV's JET colormap (RGB)."""
    lut = cv2.applyColorMap(np.arange(256, dtype=np.uint8)[:, None], cv2.COLORMAP_JET)
    lut = lut[:, 0, ::-1].astype(np.int32)
    distance = ((rgb.astype(np.int32)[:, :, None, :] - lut[None, None]) ** 2).sum(axis=-1)
    return distance.argmin(axis=-1)


def test_prediction_case_overlay_is_the_image_with_its_recorded_peak(predicted, tmp_path):
    _, out, records = predicted
    (source,) = open_sources([out])
    table = CaseTable.from_source(source)
    cache = OverlayCache(tmp_path / "cache")
    by_id = {r["image_id"]: r for r in records}
    for case in table.page(1, size=10):
        record = by_id[case.image_id]
        path = cache.render(case, opacity=1.0, scale="absolute")
        assert cache.contains(path) and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert rgb.shape[:2] == (record["height"], record["width"]) == (HEIGHT, WIDTH)
        # the map re-rendered now is the record's: its probability (the CAM's maximum) ...
        assert float(cache.heatmap(case).max()) == pytest.approx(case.probability, abs=1e-6)
        # ... and its peak: ringed at the map's own peak,
        # the overlay is the same picture
        own = cache.render(dataclasses.replace(case, peak=None), opacity=1.0, scale="absolute")
        assert own != path
        np.testing.assert_array_equal(cv2.imread(str(own)), cv2.imread(str(path)))
        # the hottest region is the class's square, and the record's peak lies in it
        x, y = record["peaks"][case.class_name]
        x0, y0 = SQUARES[case.image_id][case.class_name]
        assert x0 <= x < x0 + SIDE and y0 <= y < y0 + SIDE
        values = jet_values(rgb)
        ring = (rgb == 255).all(axis=-1)
        hottest = values[~ring].max()
        assert values[y, x] >= hottest - 2
        rows, cols = np.nonzero((values >= hottest - 2) & ~ring)
        margin = 6  # the 16 x 16 map up-sampled to the original blurs the square's edge
        assert rows.min() >= y0 - margin and rows.max() < y0 + SIDE + margin
        assert cols.min() >= x0 - margin and cols.max() < x0 + SIDE + margin


def test_viewer_lists_prediction_cases_and_says_when_the_weights_are_gone(predicted, tmp_path):
    from pylon.app.server import Viewer

    weights, out, records = predicted
    want = findings(records)
    viewer = Viewer([out], cache=tmp_path / "cache", prefetch=False)
    try:
        (name,) = viewer.runs
        count, frame, _, _ = viewer.list_cases(name, [], "all", 0.0, 1.0, [], "confidence")
        assert count == f"{len(want)} cases"
        assert list(frame["probability"]) == [
            round(w[2], 3) for w in sorted(want, key=lambda w: -w[2])
        ]
        assert viewer.list_cases(name, [], "hit", 0.0, 1.0, [], "confidence")[0] == "0 cases"
        image_id, cls, probability, (x, y) = want[0]
        png, details, _ = viewer.open_case(name, image_id, cls)
        assert cv2.imread(str(png)).shape[:2] == (HEIGHT, WIDTH)
        assert f"{probability:.3f}" in details and "n/a" in details and f"x={x}, y={y}" in details
    finally:
        viewer.close()

    # the weights moved away: the cases are still listed, rendering says why there is no overlay
    moved = weights.with_name("moved.safetensors")
    weights.rename(moved)
    try:
        viewer = Viewer([out], cache=tmp_path / "cache2", prefetch=False)
        try:
            (name,) = viewer.runs
            assert "gone" in viewer.notes[name] and "without overlays" in viewer.notes[name]
            count, _, _, _ = viewer.list_cases(name, [], "all", 0.0, 1.0, [], "image")
            assert count == f"{len(want)} cases"
            with pytest.raises(ValueError, match="no weights file"):
                viewer.open_case(name, want[0][0], want[0][1])
        finally:
            viewer.close()
    finally:
        moved.rename(weights)


def predict(weights, inputs, out, *options):
    result = CliRunner().invoke(
        app,
        ["predict", str(weights), str(inputs), "--out", str(out), "--no-overlays"]
        + ["--precision", "fp32", "--no-progress", *options],
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def test_a_16_bit_png_is_rendered_as_pylon_predict_read_it(predicted, tmp_path):
    """--png16 minmax: the viewer must read the image with the folder's setting; read by its
    bit depth (the default) the grey levels, and so the probability, differ."""
    weights, _, _ = predicted
    image = np.full((HEIGHT, WIDTH), 2000, dtype=np.uint16)
    image[10 : 10 + SIDE, 30 : 30 + SIDE] = 3000
    image[60 : 60 + SIDE, 90 : 90 + SIDE] = 1000
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "deep.png"), image)
    out = tmp_path / "out"
    (record,) = predict(weights, tmp_path / "in", out, "--png16", "minmax", "--threshold", "0")
    (source,) = open_sources([out])
    table = CaseTable.from_source(source)
    assert listed(table) == findings([record]) and len(table) == 2
    cache = OverlayCache(tmp_path / "cache")
    for case in table.page(1, size=10):
        assert float(cache.heatmap(case).max()) == pytest.approx(case.probability, abs=1e-6)
        path = cache.render(case, opacity=0.0, scale="absolute")
        grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        # min-max read: the dark square black, the bright one white, the background mid grey
        assert grey[70, 100] == 0 and grey[20, 40] == 255 and abs(int(grey[5, 5]) - 128) <= 1


def test_a_model_folder_prediction_renders_with_its_weights(tmp_path):
    """predict.json names a model folder (`pylon export-model`): its model.safetensors renders."""
    from viewer_runs import csv_run

    run = csv_run(tmp_path, evaluate=False)
    folder = tmp_path / "model"
    result = CliRunner().invoke(app, ["export-model", str(run.root), str(folder)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    records = predict(folder, tmp_path / "data" / "img", out, "--threshold", "0")
    (source,) = open_sources([out])
    assert source.weights == (folder / "model.safetensors").resolve()
    table = CaseTable.from_source(source)
    assert listed(table) == findings(records) and len(table) == 2 * len(records)
    cache = OverlayCache(tmp_path / "cache")
    case = table.sort("confidence").page(1, size=1)[0]
    path = cache.render(case, opacity=1.0, scale="absolute")
    assert cv2.imread(str(path)).shape[:2] == (96, 128)
    own = cache.render(dataclasses.replace(case, peak=None), opacity=1.0, scale="absolute")
    np.testing.assert_array_equal(cv2.imread(str(own)), cv2.imread(str(path)))
