"""DICOM conversion: inversion, min-max scaling, aspect-keeping resize, compressed syntaxes, CLI."""

import cv2
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
from pylon.data.dicom import (
    PLAIN_CONVERSION,
    REFERENCE_CONVERSION,
    DicomConversion,
    convert_folder,
    dicom_to_array,
)


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
    image, ratio, original = dicom_to_array(path, 60, PLAIN_CONVERSION)
    assert ratio == 1.0 and original == (40, 60)
    np.testing.assert_array_equal(image, naive_minmax(pixels, invert))


def test_downscale_keeps_aspect_and_averages(tmp_path):
    pixels = ramp(40, 60)
    image, ratio, _ = dicom_to_array(write_dicom(tmp_path / "a.dcm", pixels), 30, PLAIN_CONVERSION)
    assert image.shape == (20, 30) and ratio == 0.5
    full = naive_minmax(pixels, False).astype(float)
    block_mean = full.reshape(20, 2, 30, 2).mean(axis=(1, 3))
    assert np.abs(image - block_mean).max() <= 1.0


def test_equalize_flattens_histogram(tmp_path):
    pixels = (np.arange(64 * 64).reshape(64, 64) ** 2 // 2000).astype(np.uint16)
    path = write_dicom(tmp_path / "a.dicom", pixels)
    plain, _, _ = dicom_to_array(path, 64, PLAIN_CONVERSION)
    equal, _, _ = dicom_to_array(path, 64, DicomConversion(equalize=True, floor=False))
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
    report = convert_folder(src, dst, size=100, conversion=PLAIN_CONVERSION, progress=False)
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


def reference_script(pixels, invert, target):
    """The reference's scripts/convert_dcm_to_png.py, written out here from its definition:
    invert, min-max to [0, 1], equalise (256-bin CDF at the bins' left edges, interpolated
    linearly), truncate to uint8, resize with OpenCV's default to truncated sizes."""
    values = pixels.astype(np.float64)
    if invert:
        values = values.max() - values
    values = (values - values.min()) / (values.max() - values.min())
    edges = np.linspace(values.min(), values.max(), 257)
    flat = np.sort(values.ravel())
    # count of values in bins 0..k, the last bin closed on the right (numpy's histogram rule)
    cdf = np.array([np.searchsorted(flat, e, side="left") for e in edges[1:-1]] + [flat.size])
    cdf = values.max() * cdf / cdf[-1]
    out = np.empty_like(values)
    for index, v in np.ndenumerate(values):
        k = min(int(np.searchsorted(edges[:-1], v, side="right")) - 1, 255)
        if k == 255 or v <= edges[0]:
            out[index] = cdf[k] if k == 255 else cdf[0]
        else:
            t = (v - edges[k]) / (edges[k + 1] - edges[k])
            out[index] = cdf[k] + t * (cdf[k + 1] - cdf[k])
    image = (out * 255).astype(np.uint8)
    ratio = target / max(pixels.shape)
    h, w = (np.array(image.shape) * ratio).astype(int)
    return cv2.resize(image, (int(w), int(h))), ratio


@pytest.mark.parametrize("photometric,invert", [("MONOCHROME1", True), ("MONOCHROME2", False)])
def test_default_recipe_is_the_reference_script(tmp_path, photometric, invert):
    rng = np.random.default_rng(3)
    pixels = (rng.gamma(2.0, 300.0, (50, 20)) + 100).clip(0, 4095).astype(np.uint16)
    path = write_dicom(tmp_path / "a.dicom", pixels, photometric)
    expected, ratio = reference_script(pixels, invert, 64)
    image, got_ratio, _ = dicom_to_array(path, 64)
    assert got_ratio == ratio and image.shape == expected.shape == (64, 25)  # 25.6 truncated
    np.testing.assert_array_equal(image, expected)
    plain, _, _ = dicom_to_array(path, 64, PLAIN_CONVERSION)
    assert plain.shape == (64, 26)  # ours rounds the size
    # convert_folder and the CLI use the reference recipe unless told otherwise
    convert_folder(tmp_path, tmp_path / "png", size=64, progress=False)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "png" / "a.png")), expected)
    assert REFERENCE_CONVERSION == DicomConversion(equalize=True, interpolation="linear")


def test_same_file_name_in_two_folders_gives_two_outputs_and_two_ratio_rows(tmp_path):
    src = tmp_path / "dicom"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    write_dicom(src / "a" / "scan.dcm", ramp(40, 60))
    write_dicom(src / "b" / "scan.dcm", ramp(30, 30))
    report = convert_folder(src, tmp_path / "png", size=30, progress=False)
    assert report.converted == 2
    ratios = pd.read_csv(tmp_path / "png" / "ratios.csv").set_index("image_id")
    assert ratios["ratio"].to_dict() == {"a/scan": 0.5, "b/scan": 1.0}
    assert np.asarray(Image.open(tmp_path / "png" / "a" / "scan.png")).shape == (20, 30)
    assert np.asarray(Image.open(tmp_path / "png" / "b" / "scan.png")).shape == (30, 30)
    again = convert_folder(src, tmp_path / "png", size=30, progress=False)
    assert (again.converted, again.skipped) == (0, 2)


def test_two_inputs_with_one_output_name_are_refused(tmp_path):
    src = tmp_path / "dicom"
    src.mkdir()
    write_dicom(src / "scan.dcm", ramp())
    write_dicom(src / "scan.dicom", ramp())
    with pytest.raises(ValueError, match=r"scan.dcm and .*scan.dicom would both be converted"):
        convert_folder(src, tmp_path / "png", progress=False)
    assert not (tmp_path / "png").exists()
    result = CliRunner().invoke(app, ["convert-dicom", str(src), str(tmp_path / "png")])
    assert result.exit_code == 2 and "would both be converted" in result.output


def test_cli_recipe_options(tmp_path):
    src = tmp_path / "dicom"
    src.mkdir()
    pixels = (np.arange(40 * 60).reshape(40, 60) ** 2 // 900 % 4000).astype(np.uint16)
    path = write_dicom(src / "a.dicom", pixels)
    runs = {
        "reference": ([], REFERENCE_CONVERSION),
        "plain": (["--no-reference"], PLAIN_CONVERSION),
        "mixed": (
            ["--no-equalize", "--interpolation", "cubic"],
            DicomConversion(equalize=False, interpolation="cubic"),
        ),
    }
    for name, (flags, conversion) in runs.items():
        out = tmp_path / name
        result = CliRunner().invoke(
            app, ["convert-dicom", str(src), str(out), "--size", "30", *flags]
        )
        assert result.exit_code == 0, result.output
        expected, _, _ = dicom_to_array(path, 30, conversion)
        np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), expected)
    bad = CliRunner().invoke(
        app, ["convert-dicom", str(src), str(tmp_path / "x"), "--interpolation", "nearest"]
    )
    assert bad.exit_code == 2 and "interpolation" in bad.output
