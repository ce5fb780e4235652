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


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_huge_png(path, side=20000):
    """A valid 1-bit gray PNG of side x side pixels, all black, in a few hundred KB (the PNG
    format written by hand: signature, IHDR, zlib-compressed scanlines in IDAT, IEND)."""
    import struct
    import zlib

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte 0 + packed 1-bit pixels
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", body)
        + _png_chunk(b"IEND", b"")
    )
    return path


def test_huge_png_refused_from_its_header_quickly_and_in_bounded_memory(tmp_path):
    import subprocess
    import sys
    import textwrap

    path = write_huge_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 2_000_000
    # In a fresh process, so that its peak RSS is this check's alone; decoding the image would
    # need 400 MB (uint8) and PIL's own check would raise DecompressionBombError without a name.
    code = textwrap.dedent(
        f"""
        import resource, sys, time
        from pylon.data.images import ImageTooLargeError, check_pixel_limit, read_image
        def peak_mb():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        before = peak_mb()  # the interpreter, numpy, cv2, torch
        start = time.perf_counter()
        for call in (check_pixel_limit, read_image):
            try:
                call({str(path)!r})
            except ImageTooLargeError as err:
                print(err)
            else:
                sys.exit("not refused")
        print("seconds", time.perf_counter() - start)
        print("extra_peak_mb", peak_mb() - before)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for message in lines[:2]:
        assert "bomb.png" in message and "20000x20000" in message
        assert "400.0 megapixels" in message and "PYLON_MAX_PIXELS" in message
    assert float(lines[2].split()[1]) < 2.0
    assert float(lines[3].split()[1]) < 50  # decoding would take 400 MB


def test_pixel_limit_argument_and_environment(tmp_path, monkeypatch):
    from pylon.data.images import DEFAULT_MAX_PIXELS, ImageTooLargeError, check_pixel_limit

    Image.fromarray(np.zeros((50, 100), np.uint8)).save(tmp_path / "a.png")
    assert check_pixel_limit(tmp_path / "a.png", 5000) == (50, 100)  # exactly at the limit
    with pytest.raises(ImageTooLargeError, match="a.png"):
        check_pixel_limit(tmp_path / "a.png", 4999)
    with pytest.raises(ImageTooLargeError, match="a.png"):
        read_image(tmp_path / "a.png", max_pixels_limit=4999)
    monkeypatch.setenv("PYLON_MAX_PIXELS", "4999")
    with pytest.raises(ImageTooLargeError):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv("PYLON_MAX_PIXELS", "0")  # no limit
    assert read_image(tmp_path / "a.png").shape == (50, 100, 1)
    monkeypatch.setenv("PYLON_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="PYLON_MAX_PIXELS"):
        read_image(tmp_path / "a.png")
    monkeypatch.delenv("PYLON_MAX_PIXELS")
    huge = write_huge_png(tmp_path / "big.png", side=12000)
    assert 12000 * 12000 > DEFAULT_MAX_PIXELS
    with pytest.raises(ImageTooLargeError, match="big.png"):
        check_pixel_limit(huge)
    assert image_size(huge) == (12000, 12000)  # the header alone, no limit


def _asymmetric_rgb(h=30, w=44):
    image = np.zeros((h, w, 3), np.uint8)
    image[:10, :15] = (255, 0, 0)  # red top-left block
    image[-6:, -20:] = (0, 0, 255)  # blue bottom-right strip
    image[10:20, 20:24, 1] = 200
    return image


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied_as_a_viewer_shows_it(tmp_path, suffix, orientation):
    from PIL import ImageOps

    stored = _asymmetric_rgb()
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}{suffix}"
    Image.fromarray(stored).save(
        path, exif=exif.tobytes(), **({"quality": 98} if suffix == ".jpg" else {})
    )
    with Image.open(path) as im:
        shown = np.asarray(ImageOps.exif_transpose(im).convert("RGB")).astype(int)
    out = read_image(path, 3).astype(int)
    assert out.shape == shown.shape
    assert image_size(path) == shown.shape[:2]
    if suffix == ".png":
        np.testing.assert_array_equal(out, shown)
    else:
        assert np.abs(out - shown).mean() < 2.0
    kept = read_image(path, 3, orientation=False).astype(int)
    with Image.open(path) as im:
        as_stored = np.asarray(im.convert("RGB")).astype(int)
    assert kept.shape == stored.shape
    assert np.abs(kept - as_stored).mean() < 2.0
