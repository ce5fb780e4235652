"""Image reading: bit depths, alpha, palettes and JPEG to the requested channels, clear errors."""

import numpy as np
import pytest
from PIL import Image

from pylon.data.images import image_size, read_image


def _gradient(h=24, w=40):
    return (np.arange(h * w).reshape(h, w) * 7 % 256).astype(np.uint8)


def test_gray8_roundtrip(tmp_path):
    gray = _gradient()
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (24, 40, 1) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 0], gray)
    rgb = read_image(tmp_path / "g.png", channels=3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], gray)
    assert image_size(tmp_path / "g.png") == (24, 40)


def test_gray16_scaled_from_full_range(tmp_path):
    values = (np.arange(24 * 40).reshape(24, 40) * 67).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    out8 = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out8[:, :, 0], np.rint(values / 257.0).astype(np.uint8))
    outf = read_image(tmp_path / "g16.png", dtype="float32")
    np.testing.assert_allclose(outf[:, :, 0], values / 65535.0, atol=1e-6)


def test_rgba_alpha_dropped(tmp_path):
    gray = _gradient()
    alpha = np.full_like(gray, 255)
    alpha[::2] = 10
    rgba = np.stack([gray, gray, gray, alpha], axis=-1)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png")[:, :, 0], gray)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", 3), rgba[:, :, :3])


def test_palette_and_colour_to_gray(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).quantize(16).save(tmp_path / "p.png")
    reference = Image.open(tmp_path / "p.png")
    assert reference.mode == "P"
    np.testing.assert_array_equal(
        read_image(tmp_path / "p.png", 3), np.asarray(reference.convert("RGB"))
    )
    luma = np.asarray(reference.convert("L")).astype(int)
    assert np.abs(read_image(tmp_path / "p.png")[:, :, 0].astype(int) - luma).max() <= 1


def test_jpeg_rgb(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 30, 60)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    reference = np.asarray(Image.open(tmp_path / "c.jpg").convert("RGB")).astype(int)
    out = read_image(tmp_path / "c.jpg", 3).astype(int)
    assert out.shape == (32, 48, 3)
    assert np.abs(out - reference).mean() < 1.5


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        read_image(tmp_path / "nothere.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="bad.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="bad.png"):
        image_size(tmp_path / "bad.png")
