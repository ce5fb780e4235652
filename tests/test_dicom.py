"""DICOM conversion: inversion, min-max scaling, aspect-keeping resize, compressed syntaxes, CLI."""

import json

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
    report = convert_folder(src, dst, size=30, conversion=PLAIN_CONVERSION, progress=False)
    assert report.converted == 3 and report.skipped == 0
    assert [name for name, _ in report.failed] == [str(src / "broken.dicom")]
    assert report.failed[0][1]  # a reason is given
    ratios = pd.read_csv(dst / "ratios.csv").set_index("image_id")
    assert list(ratios.index) == ["a", "b", "c"]
    assert ratios.loc["a"].tolist() == [0.5, 40, 60, 20, 30]
    assert ratios.loc["b"].tolist() == [0.6, 50, 20, 30, 12]
    assert ratios.loc["c"].tolist() == [1.0, 30, 30, 30, 30]  # not resized: ratio 1
    png = np.asarray(Image.open(dst / "a.png"))
    assert png.shape == (20, 30) and png.dtype == np.uint8
    stamp = (dst / "a.png").stat().st_mtime_ns

    again = convert_folder(src, dst, size=30, conversion=PLAIN_CONVERSION, progress=False)
    assert (again.converted, again.skipped, len(again.failed)) == (0, 3, 1)
    assert (dst / "a.png").stat().st_mtime_ns == stamp
    assert pd.read_csv(dst / "ratios.csv").shape == (3, 6)

    forced = convert_folder(
        src, dst, size=30, conversion=PLAIN_CONVERSION, overwrite=True, workers=2, progress=False
    )
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
    pixels = (rng.gamma(2.0, 300.0, (100, 40)) + 100).clip(0, 4095).astype(np.uint16)
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


def _run_cli(args, log, env=None):
    """``pylon`` as a separate process with stdout and stderr to ``log``, as under nohup/sbatch."""
    import os
    import subprocess
    import sys

    with open(log, "w") as fh:
        return subprocess.run(
            [sys.executable, "-m", "pylon.cli.main", *map(str, args)],
            stdout=fh,
            stderr=fh,
            env={**os.environ, "PYLON_PROGRESS": "auto", **(env or {})},
            timeout=120,
        )


def _padded_dicom(path, pixels):
    """A DICOM whose pixel data has 4 bytes too many: pydicom warns when decoding it."""
    import pydicom

    dataset = pydicom.dcmread(write_dicom(path, pixels))
    dataset.PixelData = dataset.PixelData + b"\0" * 4
    dataset.save_as(path)
    return path


def test_rerun_with_other_settings_is_refused_then_redone_with_overwrite(tmp_path):
    src, dst = tmp_path / "dicom", tmp_path / "png"
    src.mkdir()
    write_dicom(src / "a.dicom", ramp(40, 60))
    write_dicom(src / "b.dicom", ramp(50, 20))
    runner = CliRunner()
    first = runner.invoke(app, ["convert-dicom", str(src), str(dst), "--size", "30"])
    assert first.exit_code == 0, first.output
    stamp = (dst / "a.png").stat().st_mtime_ns
    refused = runner.invoke(app, ["convert-dicom", str(src), str(dst), "--size", "20"])
    assert refused.exit_code == 2, refused.output
    message = " ".join(refused.output.split())
    assert message.startswith("error:") and "--size 30" in message and "--size 20" in message
    assert "--overwrite" in message and "conversion.json" in message
    assert (dst / "a.png").stat().st_mtime_ns == stamp  # nothing redone
    recipe = runner.invoke(
        app, ["convert-dicom", str(src), str(dst), "--size", "30", "--no-equalize"]
    )
    assert recipe.exit_code == 2 and "not equalised" in recipe.output

    redone = runner.invoke(
        app, ["convert-dicom", str(src), str(dst), "--size", "20", "--overwrite"]
    )
    assert redone.exit_code == 0 and "converted 2" in redone.output, redone.output
    ratios = pd.read_csv(dst / "ratios.csv").set_index("image_id")
    assert ratios[["height", "width"]].values.tolist() == [[13, 20], [20, 8]]
    assert np.asarray(Image.open(dst / "a.png")).shape == (13, 20)
    again = runner.invoke(app, ["convert-dicom", str(src), str(dst), "--size", "20"])
    assert again.exit_code == 0 and "skipped 2" in again.output

    # --overwrite would leave PNGs of the earlier settings that this SRC does not cover
    (src / "b.dicom").unlink()
    mixed = runner.invoke(app, ["convert-dicom", str(src), str(dst), "--size", "30", "--overwrite"])
    assert mixed.exit_code == 2 and "not in" in mixed.output and "b" in mixed.output


def test_ratios_without_recorded_settings_are_checked_against_the_size(tmp_path):
    src, dst = tmp_path / "dicom", tmp_path / "png"
    src.mkdir()
    write_dicom(src / "a.dicom", ramp(40, 60))
    convert_folder(src, dst, size=30, progress=False)
    (dst / "conversion.json").unlink()  # as an earlier pylon left it
    assert convert_folder(src, dst, size=30, progress=False).skipped == 1
    assert (dst / "conversion.json").is_file()
    (dst / "conversion.json").unlink()
    with pytest.raises(ValueError, match=r"row a \(20x30 from 40x60\) does not match --size 50"):
        convert_folder(src, dst, size=50, progress=False)
    assert convert_folder(src, dst, size=50, overwrite=True, progress=False).converted == 1
    assert json.loads((dst / "conversion.json").read_text())["size"] == 50
    assert pd.read_csv(dst / "ratios.csv")[["height", "width"]].values.tolist() == [[33, 50]]


def test_size_larger_than_the_source_keeps_the_source_size(tmp_path, monkeypatch):
    src, dst = tmp_path / "dicom", tmp_path / "png"
    src.mkdir()
    pixels = ramp(128, 96)
    path = write_dicom(src / "ct.dcm", pixels)
    image, ratio, original = dicom_to_array(path, 100_000, PLAIN_CONVERSION)
    assert image.shape == (128, 96) and ratio == 1.0 and original == (128, 96)
    np.testing.assert_array_equal(image, naive_minmax(pixels, False))
    result = CliRunner().invoke(app, ["convert-dicom", str(src), str(dst), "--size", "100000"])
    assert result.exit_code == 0, result.output
    ratios = pd.read_csv(dst / "ratios.csv")
    assert ratios.drop(columns="image_id").values.tolist() == [[1.0, 128, 96, 128, 96]]
    assert np.asarray(Image.open(dst / "ct.png")).shape == (128, 96)
    # the pixel limit of `pylon predict`, checked from the header
    monkeypatch.setenv("PYLON_MAX_PIXELS", "10000")
    report = convert_folder(src, tmp_path / "small", size=64, progress=False)
    assert report.converted == 0
    assert "ImageTooLargeError" in report.failed[0][1] and "ct.dcm" in report.failed[0][1]
    assert "PYLON_MAX_PIXELS" in report.failed[0][1]


def test_progress_lines_and_warnings_in_a_log_file(tmp_path):
    src, dst, log = tmp_path / "dicom", tmp_path / "png", tmp_path / "convert.log"
    src.mkdir()
    for i in range(3):
        write_dicom(src / f"ok{i}.dicom", ramp(40, 60))
    _padded_dicom(src / "padded.dicom", ramp(40, 60))
    run = _run_cli(
        ["convert-dicom", src, dst, "--size", "30"], log, {"PYLON_PROGRESS_INTERVAL": "0"}
    )
    text = log.read_text()
    assert run.returncode == 0, text
    lines = text.splitlines()
    counts = [line for line in lines if line.startswith("converting DICOM files: ")]
    assert len(counts) == 4 and counts[0].startswith("converting DICOM files: 1/4 (25%)"), text
    assert "file/s" in counts[0] and counts[-1].startswith("converting DICOM files: 4/4 (100%)")
    # pydicom's warning is the file's record in the report, not a stray line of the log
    assert "UserWarning" not in text and "warn_and_log" not in text
    (warned,) = [line for line in lines if "excess padding" in line]
    assert warned.strip().startswith(f"{src / 'padded.dicom'}: The pixel data is"), text
    assert "1 file(s) gave warnings" in text and "converted 4" in text


def test_captured_warnings_keep_c_library_output_and_pydicom_log_per_file(capfd):
    import ctypes
    import logging
    import warnings

    from pylon.data.dicom import captured_warnings

    libc = ctypes.CDLL(None)
    with captured_warnings() as notes:
        os_write_from_c = b"libpng warning: iCCP: known incorrect sRGB profile\n"
        libc.write(2, os_write_from_c, len(os_write_from_c))
        warnings.warn("The pixel data is 8196 bytes long", UserWarning, stacklevel=1)
        logging.getLogger("pydicom").warning("Invalid value for VR DA: '2021-01-01'")
        warnings.warn("The pixel data is 8196 bytes long", UserWarning, stacklevel=1)
    assert notes == [
        "Invalid value for VR DA: '2021-01-01'",
        "The pixel data is 8196 bytes long",
        "libpng warning: iCCP: known incorrect sRGB profile",
    ]
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    libc.write(2, b"after\n", 6)  # the terminal is back
    assert capfd.readouterr().err == "after\n"


def test_unwritable_dst_fails_once_before_any_file(tmp_path):
    import os

    src = _folder(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    targets = [blocker, blocker / "png"]
    if os.geteuid() != 0:  # root writes anywhere; a file in the way stops it too
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o555)
        targets.append(locked)
    for dst in targets:
        result = CliRunner().invoke(app, ["convert-dicom", str(src), str(dst)])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), result.output
        assert "DST" in lines[0] and str(dst) in " ".join(result.output.split())
        assert "a.dicom" not in result.output  # not once per file


def test_single_file_src_is_converted(tmp_path):
    src = write_dicom(tmp_path / "scan.dcm", ramp(40, 60))
    result = CliRunner().invoke(
        app, ["convert-dicom", str(src), str(tmp_path / "png"), "--size", "30"]
    )
    assert result.exit_code == 0 and "converted 1" in result.output, result.output
    ratios = pd.read_csv(tmp_path / "png" / "ratios.csv")
    assert ratios["image_id"].tolist() == ["scan"]
    assert np.asarray(Image.open(tmp_path / "png" / "scan.png")).shape == (20, 30)
    text = tmp_path / "notes.txt"
    text.write_text("x")
    other = CliRunner().invoke(app, ["convert-dicom", str(text), str(tmp_path / "png")])
    assert other.exit_code == 2 and "is a file without a .dicom/.dcm suffix" in other.output


def test_write_errors_name_the_file(tmp_path):
    """A write that fails without a file name ([Errno 27]/[Errno 28]: a size limit, a full disk)
    is reported with the PNG's path."""
    import resource
    import signal

    src, dst = tmp_path / "dicom", tmp_path / "png"
    src.mkdir()
    noise = np.random.default_rng(0).integers(0, 4000, (64, 64)).astype(np.uint16)
    write_dicom(src / "noise.dicom", noise)  # its PNG is ~6 KB, over the limit below
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, hard))
    try:
        report = convert_folder(src, dst, size=64, progress=False)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert report.failed == [
        (str(src / "noise.dicom"), f"OSError: {dst / 'noise.png'}: cannot write: File too large")
    ]
