"""``pylon predict`` on DICOMs: the radiology reading by default (--voi), peaks in millimetres
from PixelSpacing / ImagerPixelSpacing, and 16-bit PNGs scaled by their bit depth (--png16)."""

import json

import cv2
import numpy as np
import pandas as pd
import pytest
from brightness_model import brightness_weights
from dicom_files import write_dicom
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.inference import Predictor

SIZE = 128
CLASSES = ["bright", "also_bright"]


@pytest.fixture
def weights(tmp_path):
    return brightness_weights(tmp_path / "brightness.safetensors", CLASSES, SIZE)


def square(height, width, x0, y0, side, inside, outside):
    pixels = np.full((height, width), outside, dtype=np.uint16)
    pixels[y0 : y0 + side, x0 : x0 + side] = inside
    return pixels


def test_peaks_in_mm_from_the_pixel_spacing(weights, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    # MONOCHROME1: the low stored values of the square are the bright ones
    pixels = square(300, 400, 250, 40, 40, 100, 3000)
    write_dicom(folder / "a.dcm", pixels, "MONOCHROME1", PixelSpacing=[0.2, 0.15])
    write_dicom(folder / "b.dcm", pixels, "MONOCHROME1", ImagerPixelSpacing=[0.143, 0.139])
    write_dicom(folder / "c.dcm", pixels, "MONOCHROME1")
    cv2.imwrite(str(folder / "d.png"), (pixels // 16).astype(np.uint8))
    out = tmp_path / "out"
    args = ["predict", str(weights), str(folder), "--out", str(out), "--precision", "fp32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    records = {
        r["image_id"]: r
        for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())
    }
    spacing = {"a.dcm": (0.2, 0.15), "b.dcm": (0.143, 0.139)}
    for image_id, (row_mm, col_mm) in spacing.items():
        record = records[image_id]
        x, y = record["peaks"]["bright"]
        assert 250 <= x < 290 and 40 <= y < 80, record  # on the square, in pixels
        assert record["peaks_mm"]["bright"] == pytest.approx([x * col_mm, y * row_mm], abs=1e-6)
        assert record["pixel_spacing"] == [row_mm, col_mm]
        assert "MONOCHROME1 inverted" in record["reading"]
    assert records["a.dcm"]["spacing_attribute"] == "PixelSpacing"
    assert records["b.dcm"]["spacing_attribute"] == "ImagerPixelSpacing"
    for image_id in ("c.dcm", "d.png"):
        assert records[image_id]["peaks_mm"] is None
        assert records[image_id]["pixel_spacing"] is None
    assert records["d.png"]["reading"] is None
    table = pd.read_csv(out / "predictions.csv").set_index("image_id")
    x, y = records["a.dcm"]["peaks"]["also_bright"]
    assert table.loc["a.dcm", "peak_x_mm_also_bright"] == pytest.approx(x * 0.15)
    assert table.loc["a.dcm", "peak_y_mm_also_bright"] == pytest.approx(y * 0.2)
    assert np.isnan(table.loc["c.dcm", "peak_x_mm_bright"])
    # the Python result says the same
    prediction = Predictor(weights, precision="fp32").predict(folder / "a.dcm")
    assert prediction.pixel_spacing == (0.2, 0.15)
    x, y = prediction.peaks["bright"]
    assert prediction.peaks_mm["bright"] == pytest.approx((x * 0.15, y * 0.2))


def test_predict_reads_the_window_by_default_and_the_full_range_with_voi_minmax(weights, tmp_path):
    # the brightest stored values (4000) lie outside the window: with it, the square at 1500 is
    # the brightest part of the image; over the full range, the 4000 patch is
    pixels = square(256, 256, 20, 20, 40, 1500, 1000)
    pixels[180:220, 180:220] = 4000
    path = write_dicom(tmp_path / "w.dcm", pixels, WindowCenter=1250, WindowWidth=501)
    window = Predictor(weights, precision="fp32").predict(path)
    x, y = window.peaks["bright"]
    assert 20 <= x < 60 and 20 <= y < 60, window.peaks
    assert "window centre 1250 width 501" in window.reading
    full = Predictor(weights, precision="fp32", voi="minmax").predict(path)
    x, y = full.peaks["bright"]
    assert 180 <= x < 220 and 180 <= y < 220, full.peaks
    out = tmp_path / "out"
    args = ["predict", str(weights), str(path), "--out", str(out), "--precision", "fp32"]
    result = CliRunner().invoke(app, [*args, "--voi", "minmax"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "predictions.jsonl").read_text())
    assert record["peaks"]["bright"] == list(full.peaks["bright"])
    assert json.loads((out / "predict.json").read_text())["voi"] == "minmax"
    again = CliRunner().invoke(app, args)  # the default reading is another setting: refused
    assert again.exit_code == 2 and "voi" in again.output
    bad = CliRunner().invoke(app, [*args, "--voi", "stored", "--overwrite"])
    assert bad.exit_code == 2 and "--voi 'stored'" in bad.output
