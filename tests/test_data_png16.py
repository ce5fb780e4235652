"""16-bit PNGs that use part of their range (12-bit radiographs stored in 16 bits): scaled by the
bit depth they declare (sBIT) or use, by their own range, or by the 16-bit range (png16)."""

import struct
import zlib

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.data.images import png_significant_bits, read_image
from pylon.inference.inputs import load_input


def write_png16(path, values, sbit=None):
    """A 16-bit gray PNG of ``values``, with an ``sBIT`` chunk declaring ``sbit`` significant bits
    (PNG 11.3.3.4) inserted after IHDR when given."""
    ok, encoded = cv2.imencode(".png", values.astype(np.uint16))
    assert ok
    data = encoded.tobytes()
    if sbit is not None:
        chunk = b"sBIT" + bytes([sbit])
        end_of_ihdr = 8 + 8 + 13 + 4  # signature, IHDR's length and type, its data, its CRC
        packed = struct.pack(">I", 1) + chunk + struct.pack(">I", zlib.crc32(chunk))
        data = data[:end_of_ihdr] + packed + data[end_of_ihdr:]
    path.write_bytes(data)
    return path


def levels(values, top):
    return np.rint(values.astype(np.float64) * 255.0 / top).astype(np.uint8)


def test_12_bit_values_with_sbit_are_scaled_by_4095(tmp_path):
    values = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    path = write_png16(tmp_path / "a.png", values, sbit=12)
    assert png_significant_bits(path) == 12
    np.testing.assert_array_equal(read_image(path)[:, :, 0], levels(values, 4095))
    np.testing.assert_allclose(read_image(path, dtype="float32")[:, :, 0], values / 4095, 1e-6)
    # the 16-bit range makes it nearly black: at most level 16
    assert read_image(path, png16="full").max() == 16
    # a dark image of the same set keeps the set's scale: sBIT, not its own maximum
    dark = values // 4 + 100  # at most 1123: 11 bits
    path = write_png16(tmp_path / "dark.png", dark, sbit=12)
    np.testing.assert_array_equal(read_image(path)[:, :, 0], levels(dark, 4095))
    minmax = (dark - 100.0) / (dark.max() - 100.0)
    np.testing.assert_array_equal(
        read_image(path, png16="minmax")[:, :, 0], np.rint(minmax * 255).astype(np.uint8)
    )


def test_without_sbit_the_bit_length_of_the_largest_value(tmp_path):
    values = (np.arange(40 * 50).reshape(40, 50) % 1500).astype(np.uint16)  # max 1499: 11 bits
    path = write_png16(tmp_path / "a.png", values)
    assert png_significant_bits(path) is None
    np.testing.assert_array_equal(read_image(path)[:, :, 0], levels(values, 2047))
    # a full-range 16-bit image reads as the 16-bit range
    full = (np.arange(40 * 50).reshape(40, 50) * 33).astype(np.uint16)
    path = write_png16(tmp_path / "f.png", full)
    np.testing.assert_array_equal(read_image(path)[:, :, 0], levels(full, 65535))


def test_sbit_of_a_png_scaled_up_to_16_bits_as_the_standard_asks(tmp_path):
    values = (np.arange(64 * 64).reshape(64, 64) % 4096).astype(np.uint16)
    scaled = (values << 4) | (values >> 8)  # left bit replication (PNG 12.5): 4095 -> 65535
    path = write_png16(tmp_path / "a.png", scaled, sbit=12)
    np.testing.assert_array_equal(read_image(path)[:, :, 0], levels(scaled, 65535))


def test_predict_reads_16_bit_pngs_as_png16_says(tmp_path):
    values = (np.arange(30 * 40).reshape(30, 40) % 4096).astype(np.uint16)
    path = write_png16(tmp_path / "a.png", values, sbit=12)
    np.testing.assert_array_equal(load_input(path, 1).pixels[:, :, 0], levels(values, 4095))
    three = load_input(path, 3, png16="full").pixels
    assert three.shape == (30, 40, 3) and three.max() == round(values.max() / 257) == 5
    with pytest.raises(ValueError, match="png16 'twelve'"):
        read_image(path, png16="twelve")
    result = CliRunner().invoke(
        app, ["predict", "w.safetensors", str(path), "--out", str(tmp_path / "o"), "--png16", "x"]
    )
    assert result.exit_code == 2 and "--png16 'x'" in result.output


def test_datasets_keep_reading_16_bit_pngs_over_the_whole_range(tmp_path):
    """Training data keeps the reference's reading (v / 257, rounded); only predict reads by
    the bit depth, so caches built before stay valid."""
    import cv2

    from pylon.data import create_dataset

    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    pixels = np.full((40, 40), 4095, np.uint16)
    pixels[:20] = 1028
    cv2.imwrite(str(data / "img" / "a.png"), pixels)
    (data / "labels.csv").write_text("image,split,Nodule\nimg/a.png,test,1\n")
    dataset = create_dataset("csv", data, "test", size=32, cache=False, progress=False)
    image, _ = dataset.load(0)
    assert image.dtype == np.uint8
    assert set(np.unique(image)) == {round(1028 / 257), round(4095 / 257)}  # {4, 16}
