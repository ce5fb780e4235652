"""DICOM conversion: inversion, min-max scaling, aspect-keeping resize, compressed syntaxes, CLI."""

import numpy as np
import pandas as pd
import pytest
from dicom_files import write_dicom
from PIL import Image
from pydicom.uid import (
    JPEG2000Lossless,
    RLELossless,
)
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.data.dicom import convert_folder, dicom_to_array


def ramp(h=40, w=60):
    return (np.add.outer(np.arange(h) * 13, np.arange(w) * 29) % 3000 + 500).astype(np.uint16)


def naive_minmax(pixels, invert):
    values = pixels.astype(float)
    if invert:
        values = values.max() - values
    values = (values - values.min()) / (values.max() - values.min())
    return np.rint(values * 255).astype(np.uint8)


@pytest.mark.parametrize("photometric,invert", [("MONOCHROME1", True), ("MONOCHROME2", False)])
def test_inversion_and_minmax_without_resize(tmp_path, photometric, invert):
    pixels = ramp()
    path = write_dicom(tmp_path / "a.dicom", pixels, photometric)
    image, ratio, original = dicom_to_array(path, size=60)
    assert ratio == 1.0 and original == (40, 60)
    np.testing.assert_array_equal(image, naive_minmax(pixels, invert))


def test_downscale_keeps_aspect_and_averages(tmp_path):
    pixels = ramp(40, 60)
    image, ratio, _ = dicom_to_array(write_dicom(tmp_path / "a.dcm", pixels), size=30)
    assert image.shape == (20, 30) and ratio == 0.5
    full = naive_minmax(pixels, False).astype(float)
    block_mean = full.reshape(20, 2, 30, 2).mean(axis=(1, 3))
    assert np.abs(image - block_mean).max() <= 1.0


def test_equalize_flattens_histogram(tmp_path):
    pixels = (np.arange(64 * 64).reshape(64, 64) ** 2 // 2000).astype(np.uint16)
    path = write_dicom(tmp_path / "a.dicom", pixels)
    plain, _, _ = dicom_to_array(path, size=64)
    equal, _, _ = dicom_to_array(path, size=64, equalize=True)
    assert np.median(plain) < 80  # skewed towards dark
    assert abs(float(np.median(equal)) - 127.5) < 20


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_syntaxes_decode_like_uncompressed(tmp_path, syntax):
    pixels = ramp()
    plain = dicom_to_array(write_dicom(tmp_path / "p.dicom", pixels, "MONOCHROME1"), 100)
    packed_path = write_dicom(tmp_path / "c.dicom", pixels, "MONOCHROME1", compress=syntax)
    import pydicom

    assert pydicom.dcmread(packed_path).file_meta.TransferSyntaxUID == syntax
    packed = dicom_to_array(packed_path, 100)
    np.testing.assert_array_equal(plain[0], packed[0])
    assert plain[1:] == packed[1:]


def _folder(tmp_path):
    src = tmp_path / "dicom"
    src.mkdir()
    write_dicom(src / "a.dicom", ramp(40, 60), "MONOCHROME1")
    write_dicom(src / "b.dicom", ramp(50, 20), compress=RLELossless)
    write_dicom(src / "c.dcm", ramp(30, 30))
    (src / "broken.dicom").write_bytes(b"this is no DICOM file")
    return src


def test_convert_folder_reports_corrupt_file_and_skips_existing(tmp_path):
    src, dst = _folder(tmp_path), tmp_path / "png"
    report = convert_folder(src, dst, size=100, progress=False)
    assert report.converted == 3 and report.skipped == 0
    assert [name for name, _ in report.failed] == [str(src / "broken.dicom")]
    assert report.failed[0][1]  # a reason is given
    ratios = pd.read_csv(dst / "ratios.csv").set_index("image_id")
    assert list(ratios.index) == ["a", "b", "c"]
    assert ratios.loc["a"].tolist() == [100 / 60, 40, 60, 67, 100]
    assert ratios.loc["b"].tolist() == [2.0, 50, 20, 100, 40]
    png = np.asarray(Image.open(dst / "a.png"))
    assert png.shape == (67, 100) and png.dtype == np.uint8
    stamp = (dst / "a.png").stat().st_mtime_ns

    again = convert_folder(src, dst, size=100, progress=False)
    assert (again.converted, again.skipped, len(again.failed)) == (0, 3, 1)
    assert (dst / "a.png").stat().st_mtime_ns == stamp
    assert pd.read_csv(dst / "ratios.csv").shape == (3, 6)

    forced = convert_folder(src, dst, size=100, overwrite=True, workers=2, progress=False)
    assert (forced.converted, forced.skipped) == (3, 0)


def test_cli_convert_dicom_exit_code_and_report(tmp_path):
    src, dst = _folder(tmp_path), tmp_path / "png"
    result = CliRunner().invoke(app, ["convert-dicom", str(src), str(dst), "--size", "64"])
    assert result.exit_code == 1
    assert "broken.dicom" in result.output and "converted 3" in result.output
    (src / "broken.dicom").unlink()
    result = CliRunner().invoke(app, ["convert-dicom", str(src), str(dst), "--size", "64"])
    assert result.exit_code == 0 and "skipped 3" in result.output
    missing = CliRunner().invoke(app, ["convert-dicom", str(tmp_path / "nope"), str(dst)])
    assert missing.exit_code == 2 and "not found" in missing.output
