"""Predictor and ``pylon predict``: input formats, peaks in original pixels, batching, errors."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from dicom_files import write_dicom
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from pylon import create_model, save_weights
from pylon.cli.main import app
from pylon.inference import Failure, Predictor
from pylon.models import ModelOutput, register_model
from pylon.models.precision import BF16_PROB_TOLERANCE

SIZE = 256
MEAN, STD = 0.5, 0.25
CLASSES = ["bright", "also_bright"]


@register_model("_test_brightness_cam")
class BrightnessCam(nn.Module):
    """CAM = 1x1 conv (weight 1, bias 0) of the 4x4 average-pooled input: it peaks where the
    image is brightest, so the right answer for a bright square is known by construction."""

    def __init__(self, encoder="none", in_channels=1, num_classes=2, encoder_weights=None):
        super().__init__()
        self.head = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.constant_(self.head.weight, 1.0 / in_channels)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        cam = self.head(F.avg_pool2d(x, 4))
        return ModelOutput(cam.amax(dim=(2, 3)), cam)


def data_metadata(class_names=CLASSES, in_channels=1):
    return {
        "pylon_data": {
            "class_names": list(class_names),
            "size": SIZE,
            "in_channels": in_channels,
            "mean": [MEAN] * in_channels,
            "std": [STD] * in_channels,
        }
    }


@pytest.fixture
def brightness_weights(tmp_path):
    path = tmp_path / "brightness.safetensors"
    model = create_model("_test_brightness_cam", num_classes=len(CLASSES))
    save_weights(model, path, metadata=data_metadata())
    return path


def square_image(height, width, x0, y0, side, background=20):
    image = np.full((height, width), background, dtype=np.uint8)
    image[y0 : y0 + side, x0 : x0 + side] = 255
    return image


def reference_probability(gray_uint8):
    """The brightness model's probability derived from the spec: cubic resize to the input size,
    normalise, 4x4 average pool, max, sigmoid."""
    resized = cv2.resize(gray_uint8, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    normalised = (resized.astype(np.float64) / 255.0 - MEAN) / STD
    pooled = normalised.reshape(SIZE // 4, 4, SIZE // 4, 4).mean(axis=(1, 3))
    return 1.0 / (1.0 + np.exp(-pooled.max()))


@pytest.mark.parametrize(
    "height,width,x0,y0",
    [(400, 600, 450, 60), (600, 400, 40, 470), (333, 517, 201, 250)],
)
def test_peak_lands_on_the_bright_square_in_original_pixels(
    brightness_weights, tmp_path, height, width, x0, y0
):
    side = 30
    image = square_image(height, width, x0, y0, side)
    predictor = Predictor(brightness_weights, precision="fp32")
    result = predictor.predict(image)
    assert result.original_size == (height, width)
    for name in CLASSES:
        x, y = result.peaks[name]
        assert x0 <= x < x0 + side and y0 <= y < y0 + side, (name, (x, y))
    heatmap = result.heatmap(CLASSES[0])
    assert heatmap.shape == (height, width)
    row, col = np.unravel_index(np.argmax(heatmap), heatmap.shape)
    assert x0 - 4 <= col < x0 + side + 4 and y0 - 4 <= row < y0 + side + 4
    # the same from a file path
    cv2.imwrite(str(tmp_path / "square.png"), image)
    assert predictor.predict(tmp_path / "square.png").peaks == result.peaks


def mixed_folder(folder):
    """An 8-bit, a 16-bit and an RGBA PNG, a MONOCHROME1 DICOM and a corrupt file; returns the
    expected (height, width) and reference gray image of each readable one."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    expected = {}
    gray8 = square_image(300, 500, 100, 50, 40)
    cv2.imwrite(str(folder / "gray8.png"), gray8)
    expected["gray8"] = gray8
    gray16 = rng.integers(0, 65536, (320, 288), dtype=np.uint16)
    cv2.imwrite(str(folder / "gray16.png"), gray16)
    expected["gray16"] = np.rint(gray16 / 257.0).astype(np.uint8)
    rgba = rng.integers(0, 256, (280, 260, 4), dtype=np.uint8)
    cv2.imwrite(str(folder / "rgba.png"), rgba)  # stored as BGRA
    b, g, r = (rgba[:, :, k].astype(np.float64) for k in range(3))
    expected["rgba"] = np.rint(0.299 * r + 0.587 * g + 0.114 * b).astype(np.uint8)
    raw = (np.add.outer(np.arange(200) * 7, np.arange(240) * 3) % 4000).astype(np.uint16)
    write_dicom(folder / "chest.dcm", raw, "MONOCHROME1")
    inverted = raw.max() - raw.astype(np.float64)
    expected["chest"] = np.rint(inverted / inverted.max() * 255).astype(np.uint8)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    return expected


def test_predict_cli_on_a_mixed_folder(brightness_weights, tmp_path):
    expected = mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["predict", str(brightness_weights), str(tmp_path / "in"), "--out", str(out)]
        + ["--threshold", "0", "--precision", "fp32", "--batch-size", "3"],
    )
    assert result.exit_code == 0, result.output
    assert "broken.png" in result.output
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_id = {r["image_id"]: r for r in records}
    assert sorted(by_id) == sorted(expected)
    for image_id, gray in expected.items():
        record = by_id[image_id]
        assert (record["height"], record["width"]) == gray.shape
        # 1e-3: OpenCV's fixed-point gray conversion may differ from the float formula by 1 level
        assert record["probabilities"]["bright"] == pytest.approx(
            reference_probability(gray), abs=1e-3
        ), image_id
        assert set(record["overlays"]) == set(CLASSES)
        overlay = cv2.imread(str(out / record["overlays"]["bright"]))
        assert overlay.shape == (*gray.shape, 3)
    x, y = by_id["gray8"]["peaks"]["bright"]
    assert 100 <= x < 140 and 50 <= y < 90
    table = pd.read_csv(out / "predictions.csv")
    assert sorted(table["image_id"]) == sorted(expected)
    assert {"prob_bright", "peak_x_bright", "peak_y_bright"} <= set(table.columns)
    failures = pd.read_csv(out / "failures.csv")
    assert len(failures) == 1 and failures["path"][0].endswith("broken.png")
    assert "decode" in failures["reason"][0]


def test_classes_option_chooses_the_overlays(brightness_weights, tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), square_image(256, 300, 10, 10, 20))
    out = tmp_path / "out"
    args = ["predict", str(brightness_weights), str(tmp_path / "a.png"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--classes", "also_bright", "--threshold", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "predictions.jsonl").read_text())
    assert list(record["overlays"]) == ["also_bright"]
    result = CliRunner().invoke(app, [*args, "--classes", "nope"])
    assert result.exit_code == 2 and "nope" in result.output


def test_batched_results_match_one_by_one(brightness_weights):
    images = [square_image(300, 200 + 40 * k, 10 + 30 * k, 20 * k, 25) for k in range(5)]
    single = Predictor(brightness_weights, precision="fp32", batch_size=1)
    batched = Predictor(brightness_weights, precision="fp32", batch_size=3)
    many = batched.predict_inputs([batched.to_input(im, f"im{k}") for k, im in enumerate(images)])
    for k, image in enumerate(images):
        one = single.predict(image)
        assert many[k].image_id == f"im{k}"
        assert many[k].peaks == one.peaks
        for name in CLASSES:
            assert many[k].probabilities[name] == pytest.approx(one.probabilities[name], abs=1e-6)


def test_predict_many_reports_unreadable_files(brightness_weights, tmp_path):
    cv2.imwrite(str(tmp_path / "good.png"), square_image(64, 64, 0, 0, 8))
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    predictor = Predictor(brightness_weights)
    results = predictor.predict_many([tmp_path], skip_errors=True)
    assert [type(r) for r in results] == [Failure, type(results[1])]
    assert results[0].path.endswith("bad.jpg") and results[1].image_id == "good"
    with pytest.raises(ValueError, match="bad.jpg"):
        predictor.predict_many([tmp_path])
    with pytest.raises(ValueError, match="bad.jpg"):
        predictor.predict(tmp_path / "bad.jpg")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        predictor.predict_many([tmp_path / "missing.png"])


def test_weights_without_metadata_give_clear_errors(tmp_path):
    model = create_model("_test_brightness_cam", num_classes=2)
    no_data = tmp_path / "no_data.safetensors"
    save_weights(model, no_data)
    with pytest.raises(ValueError, match="pylon_preprocessing.*pylon train"):
        Predictor(no_data)
    bare = tmp_path / "bare.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(bare))
    with pytest.raises(ValueError, match="pylon_model"):
        Predictor(bare)
    partial = tmp_path / "partial.safetensors"
    meta = data_metadata()
    del meta["pylon_data"]["std"]
    save_weights(model, partial, metadata=meta)
    with pytest.raises(ValueError, match="lacks std"):
        Predictor(partial)


def test_array_inputs_are_checked(brightness_weights):
    predictor = Predictor(brightness_weights)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predictor.predict(np.full((64, 64), 2.0, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        predictor.predict(np.zeros((2, 64, 64, 3), dtype=np.uint8))


def test_pylon_model_fast_path_stays_close_to_fp32(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "pylon.safetensors"
    model = create_model("pylon", encoder="resnet18", num_classes=3)
    with torch.no_grad():  # the reference init gives random maps of ~20; trained ones are smaller
        model.class_head.weight.mul_(0.05)
    save_weights(model, path, metadata=data_metadata(["a", "b", "c"]))
    image = np.random.default_rng(1).integers(0, 256, (300, 280), dtype=np.uint8)
    exact = Predictor(path, precision="fp32").predict(image)
    fast = Predictor(path, precision="bf16").predict(image)
    # the stated bound for probabilities; this random-init model stays far inside it
    for name in "abc":
        assert fast.probabilities[name] == pytest.approx(
            exact.probabilities[name], abs=BF16_PROB_TOLERANCE / 4
        )


def test_voc_model_is_served_with_its_own_preprocessing(tmp_path):
    """A 3-channel VOC-style model trained with ImageNet statistics and cubic resizing: Predictor
    rebuilds exactly that input from the weights' record, not the X-ray preprocessing."""
    from pylon.data.preprocessing import make_preprocessing
    from pylon.data.transforms import IMAGENET_MEAN, IMAGENET_STD

    size = 64
    record = make_preprocessing(
        "voc", size, 3, IMAGENET_MEAN, IMAGENET_STD, ["cat", "dog"], "cubic"
    )
    model = create_model("_test_brightness_cam", in_channels=3, num_classes=2)
    path = tmp_path / "voc.safetensors"
    save_weights(model, path, metadata=record.to_metadata())
    predictor = Predictor(path, precision="fp32")

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    # the definition, written out: cubic resize to 64x64, [0, 1], per-channel ImageNet statistics
    resized = cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    expected = (resized / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    expected = torch.from_numpy(expected.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        want = torch.sigmoid(model.eval()(expected).logits)[0]
    got = predictor.predict(image).probabilities
    assert [got["cat"], got["dog"]] == pytest.approx(want.tolist(), abs=1e-5)

    # the X-ray preprocessing (one channel's statistics repeated) would give another answer
    xray = (resized / 255.0 - 0.4984) / 0.2483
    xray = torch.from_numpy(xray.astype(np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        other = torch.sigmoid(model(xray).logits)[0]
    assert abs(other[0].item() - got["cat"]) > 1e-3
