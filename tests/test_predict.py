"""Predictor and ``pylon predict``: input formats, peaks in original pixels, batching, errors."""

import json
import os
import re

import brightness_model  # noqa: F401  (registers _test_brightness_cam)
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from dicom_files import write_dicom
from safetensors.torch import save_file
from typer.testing import CliRunner
from viewer_runs import write_cam_weights

from pylon import create_model, save_weights
from pylon.cli.main import app
from pylon.inference import Failure, Predictor
from pylon.models.precision import BF16_PROB_TOLERANCE

SIZE = 256
MEAN, STD = 0.5, 0.25
CLASSES = ["bright", "also_bright"]


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
    expected["gray8.png"] = gray8
    gray16 = rng.integers(0, 65536, (320, 288), dtype=np.uint16)
    cv2.imwrite(str(folder / "gray16.png"), gray16)
    expected["gray16.png"] = np.rint(gray16 / 257.0).astype(np.uint8)
    rgba = rng.integers(0, 256, (280, 260, 4), dtype=np.uint8)
    cv2.imwrite(str(folder / "rgba.png"), rgba)  # stored as BGRA
    b, g, r = (rgba[:, :, k].astype(np.float64) for k in range(3))
    expected["rgba.png"] = np.rint(0.299 * r + 0.587 * g + 0.114 * b).astype(np.uint8)
    raw = (np.add.outer(np.arange(200) * 7, np.arange(240) * 3) % 4000).astype(np.uint16)
    write_dicom(folder / "chest.dcm", raw, "MONOCHROME1")
    inverted = raw.max() - raw.astype(np.float64)
    expected["chest.dcm"] = np.rint(inverted / inverted.max() * 255).astype(np.uint8)
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
    x, y = by_id["gray8.png"]["peaks"]["bright"]
    assert 100 <= x < 140 and 50 <= y < 90
    table = pd.read_csv(out / "predictions.csv")
    assert sorted(table["image_id"]) == sorted(expected)
    assert {"prob_bright", "peak_x_bright", "peak_y_bright"} <= set(table.columns)
    failures = pd.read_csv(out / "failures.csv")
    assert len(failures) == 1 and failures["path"][0].endswith("broken.png")
    assert "cannot" in failures["reason"][0] and "broken.png" in failures["reason"][0]


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


@pytest.mark.parametrize("choice", [",", "", " , "])
def test_an_empty_classes_option_is_refused_naming_the_classes(
    brightness_weights, tmp_path, choice
):
    cv2.imwrite(str(tmp_path / "a.png"), square_image(64, 64, 10, 10, 20))
    out = tmp_path / "out"
    args = ["predict", str(brightness_weights), str(tmp_path / "a.png"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--classes", choice])
    assert result.exit_code == 2, result.output
    assert "--classes" in result.output and "bright, also_bright" in result.output
    assert "Traceback" not in result.output and not out.exists()
    with pytest.raises(ValueError, match="no class.*bright, also_bright"):
        Predictor(brightness_weights, classes=[])


def test_weights_with_repeated_class_names_are_refused(tmp_path):
    path = tmp_path / "twice.safetensors"
    model = create_model("_test_brightness_cam", num_classes=3)
    save_weights(model, path, metadata=data_metadata(["a", "b", "a"]))
    with pytest.raises(ValueError, match=r"twice\.safetensors.*'a' repeated"):
        Predictor(path)
    cv2.imwrite(str(tmp_path / "x.png"), square_image(64, 64, 10, 10, 20))
    args = ["predict", str(path), str(tmp_path / "x.png"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "'a' repeated" in result.output, result.output


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
    assert results[0].path.endswith("bad.jpg") and results[1].image_id == "good.png"
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
    for empty in (np.zeros((0, 0)), np.zeros((0, 64, 3), dtype=np.uint8)):
        with pytest.raises(ValueError, match=re.escape(f"empty image of shape {empty.shape}")):
            predictor.predict(empty)


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


def test_ids_are_relative_paths_with_their_suffix(brightness_weights, tmp_path):
    """x.png, x.PNG and x-2.png (and sub/x.png) are four images: four ids, four overlays each."""
    from pylon.inference.inputs import gather_inputs

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    corners = {"x.png": (0, 0), "x.PNG": (200, 0), "x-2.png": (0, 200), "sub/x.png": (200, 200)}
    for name, (x0, y0) in corners.items():
        cv2.imwrite(str(folder / name), square_image(256, 256, x0, y0, 40))
    pairs = gather_inputs([folder], recursive=True)
    assert sorted(i for i, _ in pairs) == sorted(corners)
    assert all(p == folder / i for i, p in pairs)
    assert sorted(i for i, _ in gather_inputs([folder])) == ["x-2.png", "x.PNG", "x.png"]
    # the same file twice is one input; two files that would share an id are an error
    assert gather_inputs([folder / "x.png", folder / "x.png"]) == [("x.png", folder / "x.png")]
    with pytest.raises(ValueError, match="x.png.*common folder"):
        gather_inputs([folder / "x.png", folder / "sub" / "x.png"])

    out = tmp_path / "out"
    args = ["predict", str(brightness_weights), str(folder), "-r", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--threshold", "0", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["image_id"] for r in records) == sorted(corners)
    overlays = {r["overlays"]["bright"] for r in records}
    assert len(overlays) == 4 and all((out / o).is_file() for o in overlays)
    for record in records:  # each record and its overlay belong to its own file's square
        x0, y0 = corners[record["image_id"]]
        x, y = record["peaks"]["bright"]
        assert x0 <= x < x0 + 40 and y0 <= y < y0 + 40, record["image_id"]
        overlay = cv2.imread(str(out / record["overlays"]["bright"]), cv2.IMREAD_GRAYSCALE)
        image = cv2.imread(str(folder / record["image_id"]), cv2.IMREAD_GRAYSCALE)
        others = [n for n in corners if n != record["image_id"]]
        mine = np.abs(overlay.astype(int) - image).mean()
        for other in others:
            theirs = cv2.imread(str(folder / other), cv2.IMREAD_GRAYSCALE)
            assert mine < np.abs(overlay.astype(int) - theirs).mean(), (record["image_id"], other)


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_rerun_retries_failures_and_overwrite_starts_clean(brightness_weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"ok{k}.png"), square_image(256, 256, 30 * k, 10, 20))
    (folder / "late.png").write_bytes(b"not yet a png")
    out = tmp_path / "out"
    args = ["predict", str(brightness_weights), str(folder), "--out", str(out)]
    args += ["--threshold", "0", "--precision", "fp32", "--batch-size", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sorted(r["image_id"] for r in _jsonl(out / "predictions.jsonl")) == [
        "ok0.png",
        "ok1.png",
        "ok2.png",
    ]
    assert list(pd.read_csv(out / "failures.csv")["path"]) == [str(folder / "late.png")]

    # the file is repaired: the rerun predicts only it, and the old failures.csv is gone
    cv2.imwrite(str(folder / "late.png"), square_image(256, 256, 100, 100, 20))
    before = (out / "predictions.jsonl").read_text()
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 image(s) already in" in result.output and "predicted 1 image(s)" in result.output
    after = (out / "predictions.jsonl").read_text()
    assert after.startswith(before)  # earlier records kept as they were
    assert [r["image_id"] for r in _jsonl(out / "predictions.jsonl")][3:] == ["late.png"]
    assert not (out / "failures.csv").exists()
    assert sorted(pd.read_csv(out / "predictions.csv")["image_id"]) == [
        "late.png",
        "ok0.png",
        "ok1.png",
        "ok2.png",
    ]

    # --overwrite: only pylon's own outputs go (an overlay of a file no longer given too)
    (folder / "ok2.png").unlink()
    (out / "notes.txt").write_text("mine")
    (out / "overlays" / "keep.png").write_bytes(b"user file")
    (out / "failures.csv").write_text("path,reason\nold,stale\n")
    result = CliRunner().invoke(app, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "already in" not in result.output
    assert sorted(r["image_id"] for r in _jsonl(out / "predictions.jsonl")) == [
        "late.png",
        "ok0.png",
        "ok1.png",
    ]
    assert not (out / "failures.csv").exists()
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(
        [f"{i}_{c}.png" for i in ("late.png", "ok0.png", "ok1.png") for c in CLASSES] + ["keep.png"]
    )
    assert (out / "notes.txt").read_text() == "mine"

    # an --out that is a file, and results of another model, are refused before any work
    result = CliRunner().invoke(app, [*args[:3], "--out", str(out / "notes.txt")])
    assert result.exit_code == 2 and "is a file" in result.output
    other = tmp_path / "other.safetensors"
    model = create_model("_test_brightness_cam", num_classes=3)
    save_weights(model, other, metadata=data_metadata(["p", "q", "r"]))
    result = CliRunner().invoke(app, ["predict", str(other), *args[2:]])
    assert result.exit_code == 2 and "--overwrite" in result.output


def test_a_cut_last_line_is_dropped_and_redone(brightness_weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        cv2.imwrite(str(folder / f"im{k}.png"), square_image(256, 256, 50 * k, 10, 20))
    out = tmp_path / "out"
    args = ["predict", str(brightness_weights), str(folder), "--out", str(out), "--no-overlays"]
    assert CliRunner().invoke(app, args).exit_code == 0
    lines = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.jsonl").write_text(lines[0] + lines[1][: len(lines[1]) // 2])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 image(s) already in" in result.output
    again = (out / "predictions.jsonl").read_text().splitlines(keepends=True)
    assert sorted(again) == sorted(lines)
    (out / "predictions.jsonl").write_text("garbage\n" + "".join(lines))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "line 1" in result.output and "--overwrite" in result.output


def test_predict_killed_then_rerun_predicts_every_image_once(tmp_path):
    """kill -9 of a ``pylon predict`` subprocess once it has written a batch, then a rerun: each
    image is in predictions.jsonl exactly once, the CSV equals the JSONL, and the resumed
    probabilities equal an in-process prediction of the same file."""
    import os
    import signal
    import subprocess
    import sys
    import time

    weights = write_cam_weights(tmp_path / "cam.safetensors")
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"im{k:02d}.png" for k in range(40)]
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (128, 128), dtype=np.uint8))
    out = tmp_path / "out"
    jsonl = out / "predictions.jsonl"
    command = [sys.executable, "-m", "pylon.cli.main", "predict", str(weights), str(folder)]
    command += ["--out", str(out), "--batch-size", "1", "--threshold", "0"]
    command += ["--precision", "fp32"]
    env = {**os.environ, "PYLON_PROGRESS": "off"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if jsonl.is_file() and jsonl.read_text().count("\n") >= 1:
            break
        time.sleep(0.005)
    assert process.poll() is None, process.stdout.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    first = jsonl.read_text()
    n_first = first.count("\n")
    assert 1 <= n_first < len(names)
    assert not (out / "predictions.csv").exists()

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    kept = len([line for line in first.split("\n")[:-1] if line.strip()])
    assert f"{kept} image(s) already in" in rerun.stdout
    records = _jsonl(jsonl)
    assert sorted(r["image_id"] for r in records) == names  # each exactly once
    table = pd.read_csv(out / "predictions.csv")
    assert list(table["image_id"]) == [r["image_id"] for r in records]
    predictor = Predictor(weights, precision="fp32")
    for row, rec in zip(table.to_dict("records"), records, strict=True):
        assert (row["height"], row["width"]) == (rec["height"], rec["width"]) == (128, 128)
        assert row["selected"] == "|".join(rec["selected"])
        want = predictor.predict(folder / rec["image_id"])
        for c in ("a", "b"):
            assert row[f"prob_{c}"] == pytest.approx(rec["probabilities"][c], rel=1e-12)
            assert rec["probabilities"][c] == pytest.approx(want.probabilities[c], abs=1e-5)
            assert [row[f"peak_x_{c}"], row[f"peak_y_{c}"]] == rec["peaks"][c]
            assert (out / rec["overlays"][c]).is_file()


def _huge_png(path, side):
    """A valid all-black 8-bit grey PNG of side x side pixels, built from zlib directly (a
    20000 px one is ~390 KB and takes about a second; no decoder ever holds its pixels)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    compressor = zlib.compressobj(9)
    rows = bytes(side + 1) * 100  # filter byte + pixels, 100 rows per call
    idat = b"".join(compressor.compress(rows) for _ in range(side // 100)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _predict_peak_rss(args, log):
    """Run ``pylon predict ARGS`` in a child of a fresh interpreter, output to ``log``; return
    (exit code, the child's peak RSS in MB from getrusage(RUSAGE_CHILDREN))."""
    import subprocess
    import sys

    wrapper = (
        "import resource, subprocess, sys\n"
        "command = [sys.executable, '-m', 'pylon.cli.main', 'predict', *sys.argv[1:]]\n"
        "code = subprocess.call(command)\n"
        "print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)\n"
    )
    unset = ("PYLON_PROGRESS", "PYLON_MAX_PIXELS", "OPENCV_LOG_LEVEL")  # the defaults, as a user
    env = {k: v for k, v in os.environ.items() if k not in unset}
    with open(log, "w") as handle:
        done = subprocess.run(
            [sys.executable, "-c", wrapper, *map(str, args)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=handle,
            text=True,
            timeout=120,
        )
    code, rss = done.stdout.split()[-2:]
    return int(code), float(rss)


@pytest.fixture(scope="module")
def cam_weights(tmp_path_factory):
    """A small registered model (CAM, resnet18, 64 px input, 2 classes) that a subprocess can
    rebuild from its weights file alone."""
    return write_cam_weights(tmp_path_factory.mktemp("cam") / "cam.safetensors")


@pytest.mark.slow  # ~30 s: two predict subprocesses, a 6000 px and a 20000 px PNG
def test_huge_images_are_refused_and_memory_is_bounded_by_the_batch(cam_weights, tmp_path):
    """A 20000x20000 PNG (390 KB) is one clear failure, not an OOM; a 6000x6000 one is
    predicted, with overlays, for less than 250 MB above a run on small images (the earlier
    code kept full-resolution float heatmaps and overlays: ~700 MB more); in a log file the run
    reports progress as plain lines, and OpenCV's own warnings about a broken file are silent."""
    small = tmp_path / "small"
    small.mkdir()
    for k in range(4):
        cv2.imwrite(str(small / f"s{k}.png"), square_image(300, 300, 40 * k, 10, 30))
    (small / "s4.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # OpenCV warns
    big = tmp_path / "big"
    big.mkdir()
    gradient = np.add.outer(np.arange(6000) // 24, np.arange(6000) // 24).astype(np.uint8)
    cv2.imwrite(str(big / "large.png"), gradient)
    _huge_png(big / "huge.png", 20000)
    assert (big / "huge.png").stat().st_size < 500_000
    options = ["--threshold", "0", "--precision", "fp32", "--batch-size", "2"]

    code, baseline = _predict_peak_rss(
        [cam_weights, small, "--out", tmp_path / "o1", *options], tmp_path / "small.log"
    )
    assert code == 0
    lines = (tmp_path / "small.log").read_text()
    assert "\x1b[" not in lines and "WARN" not in lines and "grfmt" not in lines, lines
    for k in range(1, 6):  # one plain line per image here (each is 20 % of the total)
        assert re.search(rf"^predicting: {k}/5 \({20 * k}%\), [\d.]+ img/s", lines, re.M), lines

    code, peak = _predict_peak_rss(
        [cam_weights, big, "--out", tmp_path / "o2", *options], tmp_path / "big.log"
    )
    print(f"peak RSS: {baseline:.0f} MB on 300 px images, {peak:.0f} MB with a 6000 px one")
    assert code == 0
    failures = pd.read_csv(tmp_path / "o2" / "failures.csv")
    assert list(failures["path"]) == [str(big / "huge.png")]
    assert "20000x20000" in failures["reason"][0] and "limit" in failures["reason"][0]
    record = _jsonl(tmp_path / "o2" / "predictions.jsonl")[0]
    assert (record["image_id"], record["height"], record["width"]) == ("large.png", 6000, 6000)
    overlay = cv2.imread(str(tmp_path / "o2" / record["overlays"]["a"]))
    assert overlay.shape == (2048, 2048, 3)  # drawn at the bounded display size
    assert peak - baseline < 250, (baseline, peak)


@pytest.mark.parametrize(
    "option,value,expected",
    [
        ("--precision", "nope", "--precision='nope'; expected one of"),
        ("--device", "nope", "device 'nope'"),
        ("--precision", "fp16", "needs a CUDA device"),
    ],
)
def test_bad_precision_or_device_values_exit_2(
    brightness_weights, tmp_path, option, value, expected
):
    cv2.imwrite(str(tmp_path / "a.png"), square_image(64, 64, 10, 10, 20))
    out = tmp_path / "out"
    args = ["predict", str(brightness_weights), str(tmp_path / "a.png"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, option, value])
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_a_second_predict_on_a_held_out_folder_is_refused(cam_weights, tmp_path):
    """While another process holds --out's lock, predict exits 1 with one line naming the
    holder's pid, and touches nothing; once released, the same command runs and keeps the lock
    file (--overwrite does not remove it)."""
    import subprocess
    import sys

    from pylon.locks import LOCK_NAME, folder_lock

    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), square_image(64, 64, 10, 10, 20))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pylon.cli.main", "predict", str(cam_weights), str(folder)]
    command += ["--out", str(out), "--precision", "fp32", "--overwrite"]
    env = {**os.environ, "PYLON_PROGRESS": "off"}
    with folder_lock(out, "pylon predict (the test)"):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"pid {os.getpid()}" in done.stdout and "Traceback" not in done.stderr
        assert len(done.stdout.strip().splitlines()) == 1, done.stdout
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    result = CliRunner().invoke(app, command[3:])  # released: the same command runs
    assert result.exit_code == 0, result.output
    assert (out / LOCK_NAME).is_file() and (out / "predictions.jsonl").is_file()
    assert "other file(s) skipped" not in result.output  # the lock file is not an input either


@pytest.mark.parametrize("inside", ["sub", "same"])
def test_recursive_rerun_does_not_predict_its_own_outputs(brightness_weights, tmp_path, inside):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(2):
        cv2.imwrite(str(folder / f"im{k}.png"), square_image(64, 64, 10 * k, 10, 20))
    out = folder / "results" if inside == "sub" else folder
    args = ["predict", str(brightness_weights), str(folder), "-r", "--out", str(out)]
    args += ["--threshold", "0", "--precision", "fp32"]
    for run in range(2):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert sorted(r["image_id"] for r in _jsonl(out / "predictions.jsonl")) == [
            "im0.png",
            "im1.png",
        ], run
        assert "other file(s) skipped" not in result.output, result.output
    assert "predicted 0 image(s)" in result.output and len(list(out.glob("overlays/*.png"))) == 4


def test_a_changed_input_file_is_redone_on_resume(brightness_weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), square_image(128, 128, 10, 10, 20))
    cv2.imwrite(str(folder / "b.png"), square_image(128, 128, 60, 60, 20))
    out = tmp_path / "out"
    args = ["predict", str(brightness_weights), str(folder), "--out", str(out)]
    args += ["--threshold", "0", "--precision", "fp32"]
    assert CliRunner().invoke(app, args).exit_code == 0
    first = {r["image_id"]: r for r in _jsonl(out / "predictions.jsonl")}
    # same name, other content (the square moved): the record must follow the file
    cv2.imwrite(str(folder / "a.png"), square_image(128, 128, 100, 100, 20))
    stat = (folder / "a.png").stat()
    os.utime(folder / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 image(s) already in" in result.output and "predicted 1 image(s)" in result.output
    records = {r["image_id"]: r for r in _jsonl(out / "predictions.jsonl")}
    assert sorted(records) == ["a.png", "b.png"] and records["b.png"] == first["b.png"]
    x, y = records["a.png"]["peaks"]["bright"]
    assert 100 <= x < 120 and 100 <= y < 120, (x, y)
    table = pd.read_csv(out / "predictions.csv")
    assert table.set_index("image_id").loc["a.png", "peak_x_bright"] == x
    # the same mtime but another size is a change too
    cv2.imwrite(str(folder / "b.png"), np.zeros((30, 40), dtype=np.uint8))
    os.utime(folder / "b.png", ns=(stat.st_atime_ns, first["b.png"]["file_mtime_ns"]))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "predicted 1 image(s)" in result.output, result.output
    records = {r["image_id"]: r for r in _jsonl(out / "predictions.jsonl")}
    assert (records["b.png"]["height"], records["b.png"]["width"]) == (30, 40)


def test_folder_scans_read_every_supported_format_and_list_the_rest(brightness_weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = square_image(96, 128, 40, 30, 20)
    for suffix in (".tif", ".bmp", ".webp", ".png"):
        params = [cv2.IMWRITE_WEBP_QUALITY, 101] if suffix == ".webp" else []  # lossless
        assert cv2.imwrite(str(folder / f"im{suffix}"), image, params)
    raw = (np.add.outer(np.arange(60) * 7, np.arange(80) * 3) % 4000).astype(np.uint16)
    write_dicom(folder / "IM0001", raw)  # no suffix: found by its DICM preamble
    (folder / "notes.txt").write_text("not an image")
    (folder / "gone.png").symlink_to(folder / "missing.png")
    out = tmp_path / "out"
    args = ["predict", str(brightness_weights), str(folder), "--out", str(out), "--no-overlays"]
    result = CliRunner().invoke(app, [*args, "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    records = {r["image_id"]: r for r in _jsonl(out / "predictions.jsonl")}
    assert sorted(records) == ["IM0001", "im.bmp", "im.png", "im.tif", "im.webp"]
    assert (records["IM0001"]["height"], records["IM0001"]["width"]) == (60, 80)
    for name in ("im.bmp", "im.tif", "im.webp"):
        assert records[name]["probabilities"] == records["im.png"]["probabilities"], name
    failures = pd.read_csv(out / "failures.csv").set_index("path")["reason"]
    assert sorted(failures.index) == [str(folder / "gone.png"), str(folder / "notes.txt")]
    assert "dangling symbolic link" in failures[str(folder / "gone.png")]
    assert "not an image" in failures[str(folder / "notes.txt")]
    assert "2 other file(s) skipped" in result.output


def _png_with_bad_text_crc(path, image):
    """A valid PNG with a tEXt chunk whose CRC is wrong: libpng decodes it and prints
    'libpng warning: tEXt: CRC error' on the process's stderr."""
    import struct

    data = cv2.imencode(".png", image)[1].tobytes()
    body = b"tEXt" + b"Comment\x00hello"
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", 1234)
    end = data.rindex(b"IEND") - 4  # after the pixels (PIL refuses it before them)
    path.write_bytes(data[:end] + chunk + data[end:])


def test_decoder_warnings_go_into_the_record_of_their_file(brightness_weights, tmp_path, capfd):
    import pydicom

    folder = tmp_path / "in"
    folder.mkdir()
    _png_with_bad_text_crc(folder / "crc.png", square_image(64, 64, 10, 10, 20))
    cv2.imwrite(str(folder / "clean.png"), square_image(64, 64, 30, 30, 20))
    write_dicom(folder / "padded.dcm", np.full((20, 30), 7, dtype=np.uint16))
    dataset = pydicom.dcmread(folder / "padded.dcm")
    dataset.PixelData += bytes(200)  # pydicom warns about the excess padding
    dataset.save_as(folder / "padded.dcm")
    out = tmp_path / "out"
    args = ["predict", str(brightness_weights), str(folder), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--precision", "fp32", "--batch-size", "2"])
    captured = capfd.readouterr()
    assert result.exit_code == 0, result.output
    for text in (result.output, captured.out, captured.err):
        assert "libpng" not in text and "padding" not in text, text
    records = {r["image_id"]: r for r in _jsonl(out / "predictions.jsonl")}
    assert records["clean.png"]["warnings"] == []
    assert records["crc.png"]["warnings"] == ["libpng warning: tEXt: CRC error"]
    assert len(records["padded.dcm"]["warnings"]) == 1
    assert "excess padding" in records["padded.dcm"]["warnings"][0]
    assert "2 file(s) with decoder warnings" in result.output
