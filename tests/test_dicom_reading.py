"""The DICOM reading of convert-dicom and predict: Modality LUT, VOI LUT or window, MONOCHROME1,
checked against the DICOM standard's definitions computed here (PS3.3 C.11)."""

import json
import warnings

import numpy as np
import pydicom
import pytest
from dicom_files import write_dicom
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.data.dicom import DicomConversion, convert_folder, read_dicom_image
from pylon.inference.inputs import load_input


def ramp12(h=32, w=128):
    """Every 12-bit value once (rows of 128 consecutive values)."""
    return (np.arange(h * w).reshape(h, w) * 4096 // (h * w)).astype(np.uint16)


def linear_window(x, center, width):
    """PS3.3 C.11.2.1.2.1 (VOI LUT Function LINEAR) with the output range [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    out = ((x - (center - 0.5)) / (width - 1) + 0.5).clip(0, 1)
    out[x <= center - 0.5 - (width - 1) / 2] = 0.0
    out[x > center - 0.5 + (width - 1) / 2] = 1.0
    return out


def lut_item(first_mapped, bits, data):
    item = Dataset()
    item.LUTDescriptor = [len(data), first_mapped, bits]
    item.add_new("LUTData", "US", [int(v) for v in data])
    return Sequence([item])


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_window_is_the_standard_linear_function_of_the_first_window(tmp_path, photometric):
    pixels = ramp12()
    path = write_dicom(
        tmp_path / "w.dcm",
        pixels,
        photometric,
        WindowCenter=[1000, 3000],
        WindowWidth=[501, 100],
    )
    image = read_dicom_image(path)
    expected = linear_window(pixels, 1000, 501)
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    np.testing.assert_allclose(image.values, expected, rtol=0, atol=1e-12)
    assert "window centre 1000 width 501 (first of 2, LINEAR)" in image.reading
    assert image.reading.endswith("MONOCHROME1 inverted") == (photometric == "MONOCHROME1")
    # the whole range instead: min-max of the stored values (no rescale in this file)
    full = read_dicom_image(path, voi="minmax").values
    minmax = pixels / 4095.0
    np.testing.assert_allclose(full, 1 - minmax if photometric == "MONOCHROME1" else minmax)
    # predict's uint8 input is the display value rounded
    loaded = load_input(path, 1)
    np.testing.assert_array_equal(loaded.pixels[:, :, 0], np.rint(expected * 255))
    assert loaded.reading == image.reading


def test_rescale_slope_intercept_comes_before_the_window(tmp_path):
    pixels = ramp12()
    path = write_dicom(
        tmp_path / "ct.dcm",
        pixels,
        RescaleSlope=2,
        RescaleIntercept=-1024,
        WindowCenter=40,
        WindowWidth=400,
    )
    hounsfield = pixels * 2.0 - 1024
    image = read_dicom_image(path)
    np.testing.assert_allclose(image.values, linear_window(hounsfield, 40, 400), atol=1e-12)
    assert image.reading.startswith("modality LUT (rescale slope 2, intercept -1024), window")
    # a negative slope turns the scale over: min-max of the modality values shows it
    flipped = write_dicom(tmp_path / "neg.dcm", pixels, RescaleSlope=-1, RescaleIntercept=100)
    values = 100.0 - pixels
    np.testing.assert_allclose(
        read_dicom_image(flipped, voi="minmax").values,
        (values - values.min()) / (values.max() - values.min()),
    )
    # the reference's reading ignores the modality LUT: the stored values min-max
    np.testing.assert_allclose(read_dicom_image(flipped, voi="stored").values, pixels / 4095.0)


def test_modality_lut_sequence_then_window(tmp_path):
    pixels = ramp12()
    table = (np.arange(4096) ** 2 // 256).astype(np.uint16)  # 0 .. 65520, not linear
    path = write_dicom(
        tmp_path / "m.dcm",
        pixels,
        ModalityLUTSequence=lut_item(0, 16, table),
        WindowCenter=30000,
        WindowWidth=20001,
    )
    image = read_dicom_image(path)
    np.testing.assert_allclose(image.values, linear_window(table[pixels], 30000, 20001))
    assert image.reading.startswith("modality LUT sequence, window centre 30000")
    mapped = table[pixels].astype(float)
    np.testing.assert_allclose(
        read_dicom_image(path, voi="minmax").values,
        (mapped - mapped.min()) / (mapped.max() - mapped.min()),
    )


@pytest.mark.parametrize("bits,top", [(8, 255), (12, 4095), (16, 4095)])
def test_voi_lut_sequence_is_preferred_to_the_window(tmp_path, bits, top):
    """``top``: the output range is that of the entries (a descriptor may declare 16 bits for
    12-bit entries, as some CRs write)."""
    pixels = ramp12()
    first, entries = 1000, 2048
    data = np.rint(top * np.sqrt(np.arange(entries) / (entries - 1))).astype(np.uint16)
    path = write_dicom(
        tmp_path / "v.dcm",
        pixels,
        "MONOCHROME1",
        VOILUTSequence=lut_item(first, bits, data),
        WindowCenter=2000,
        WindowWidth=100,
    )
    # PS3.3 C.11.2.1.1: values below the first mapped one take the first entry, values past the
    # last mapped one the last; the output range is 0 .. top
    index = np.clip(pixels.astype(int) - first, 0, entries - 1)
    expected = 1.0 - data[index] / top
    dataset = pydicom.dcmread(path)
    image = read_dicom_image(dataset)
    np.testing.assert_allclose(image.values, expected, atol=1e-12)
    assert f"VOI LUT sequence, {top.bit_length()}-bit entries" in image.reading
    assert dataset.VOILUTSequence[0].LUTDescriptor == [entries, first, bits]  # left as it was


def test_12_bit_stored_in_16_ignores_the_high_bits_and_signed_values_extend(tmp_path):
    values = ramp12()
    # the upper 4 bits of each 16-bit word are not pixel data (BitsStored 12, HighBit 11)
    words = values | 0xA000
    path = write_dicom(tmp_path / "u.dcm", words, WindowCenter=2048, WindowWidth=1024)
    np.testing.assert_allclose(read_dicom_image(path).values, linear_window(values, 2048, 1024))
    # signed 12-bit: two's complement in bits 0..11, the sign in bit 11
    signed = values.astype(int) - 2048
    path = write_dicom(
        tmp_path / "s.dcm",
        (signed & 0x0FFF).astype(np.uint16) | 0x5000,
        PixelRepresentation=1,
        WindowCenter=0,
        WindowWidth=2001,
    )
    np.testing.assert_allclose(read_dicom_image(path).values, linear_window(signed, 0, 2001))
    minmax = read_dicom_image(path, voi="minmax").values
    np.testing.assert_allclose(minmax, (signed + 2048) / 4095.0)


def test_a_file_without_window_is_min_max_scaled_and_a_bad_window_is_named(tmp_path):
    pixels = ramp12() // 2 + 100
    path = write_dicom(tmp_path / "plain.dcm", pixels, "MONOCHROME1")
    image = read_dicom_image(path)
    low, high = pixels.min(), pixels.max()
    np.testing.assert_allclose(image.values, (high - pixels) / (high - low))
    assert "no VOI LUT or window in the file: min-max" in image.reading
    bad = write_dicom(tmp_path / "bad.dcm", pixels, WindowCenter=100, WindowWidth=0)
    with pytest.raises(ValueError, match=r"bad\.dcm: .*Window Width.*--voi minmax"):
        read_dicom_image(bad)
    assert read_dicom_image(bad, voi="minmax").values.max() == 1.0


def test_pixel_spacing_then_imager_pixel_spacing(tmp_path):
    pixels = ramp12(8, 8)
    both = write_dicom(
        tmp_path / "a.dcm", pixels, PixelSpacing=[0.5, 0.25], ImagerPixelSpacing=[0.2, 0.2]
    )
    image = read_dicom_image(both)
    assert image.pixel_spacing == (0.5, 0.25) and image.spacing_attribute == "PixelSpacing"
    imager = write_dicom(tmp_path / "b.dcm", pixels, ImagerPixelSpacing=[0.143, 0.139])
    image = read_dicom_image(imager)
    assert image.pixel_spacing == (0.143, 0.139)
    assert image.spacing_attribute == "ImagerPixelSpacing"
    none = read_dicom_image(write_dicom(tmp_path / "c.dcm", pixels))
    assert none.pixel_spacing is None and none.spacing_attribute is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        zero = read_dicom_image(write_dicom(tmp_path / "d.dcm", pixels, PixelSpacing=[0, 0.2]))
    assert zero.pixel_spacing is None
    assert any("d.dcm: PixelSpacing" in str(w.message) for w in caught)


def test_convert_dicom_says_which_reading_it_applied(tmp_path):
    src = tmp_path / "dicom"
    src.mkdir()
    pixels = ramp12()
    write_dicom(src / "a.dcm", pixels, WindowCenter=1000, WindowWidth=501)
    runner = CliRunner()
    reference = runner.invoke(app, ["convert-dicom", str(src), str(tmp_path / "ref")])
    assert reference.exit_code == 0, reference.output
    text = " ".join(reference.output.split())
    assert "--voi stored" in text and "the reference's reading" in text
    settings = json.loads((tmp_path / "ref" / "conversion.json").read_text())
    assert settings["voi"] == "stored" and "reference's reading" in settings["reading"]

    plain = runner.invoke(
        app, ["convert-dicom", str(src), str(tmp_path / "plain"), "--no-reference"]
    )
    assert plain.exit_code == 0, plain.output
    assert "--voi window" in " ".join(plain.output.split())
    png = np.asarray(Image.open(tmp_path / "plain" / "a.png"))
    np.testing.assert_array_equal(png, np.rint(linear_window(pixels, 1000, 501) * 255))

    # --voi overrides the recipe's reading; a rerun with another reading is refused
    refused = runner.invoke(
        app, ["convert-dicom", str(src), str(tmp_path / "ref"), "--voi", "window"]
    )
    assert refused.exit_code == 2 and "--voi stored" in refused.output
    assert "--voi window" in refused.output
    bad = runner.invoke(app, ["convert-dicom", str(src), str(tmp_path / "x"), "--voi", "lut"])
    assert bad.exit_code == 2 and "--voi 'lut'" in bad.output


def test_conversion_json_from_before_the_reading_was_recorded_still_resumes(tmp_path):
    src, dst = tmp_path / "dicom", tmp_path / "png"
    src.mkdir()
    write_dicom(src / "a.dcm", ramp12())
    convert_folder(src, dst, size=64, progress=False)
    settings = json.loads((dst / "conversion.json").read_text())
    del settings["voi"], settings["reading"]  # as an earlier pylon wrote it (the stored reading)
    (dst / "conversion.json").write_text(json.dumps(settings))
    assert convert_folder(src, dst, size=64, progress=False).skipped == 1
    with pytest.raises(ValueError, match="--voi stored.*--voi minmax"):
        convert_folder(
            src,
            dst,
            size=64,
            conversion=DicomConversion(voi="minmax"),
            progress=False,
        )
