"""Heatmap overlays and pages: shapes at the original resolution, page counts, real PNG files."""

import numpy as np
import pytest
from PIL import Image

from pylon.evaluation import HeatmapRow, overlay_image, write_heatmap_pages


def hot_corner_heatmap(size: int = 64) -> np.ndarray:
    heat = np.zeros((size, size), dtype=np.float32)
    heat[: size // 4, : size // 4] = 1.0
    return heat


@pytest.mark.parametrize("image", [np.zeros((300, 200), np.uint8), np.zeros((300, 200, 3))])
def test_overlay_has_the_original_resolution(image):
    out = overlay_image(image, hot_corner_heatmap())
    assert out.shape == (300, 200, 3) and out.dtype == np.uint8
    # the hot quarter of the 64x64 map lands in the top-left quarter of the 300x200 image
    # (jet: 1 -> red, 0 -> blue)
    assert out[20, 20, 0] > out[20, 20, 2]
    assert out[250, 150, 2] > out[250, 150, 0]


def test_overlay_draws_boxes_and_rejects_raw_scores():
    out = overlay_image(np.zeros((50, 80), np.uint8), np.zeros((8, 8)), boxes=[(10, 20, 30, 15, 0)])
    assert tuple(out[20, 25]) == (0, 255, 0)  # top edge of the box
    assert tuple(out[35, 40]) == (0, 255, 0)  # bottom edge, y + h = 35
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay_image(np.zeros((50, 80)), np.full((8, 8), 3.0))
    with pytest.raises(ValueError, match="image must be"):
        overlay_image(np.zeros((50, 80, 4)), np.zeros((8, 8)))


def test_pages_of_ten_rows(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for k in range(23):
        image = rng.integers(0, 255, size=(60, 40), dtype=np.uint8)
        heat = rng.random((16, 16))
        hit = [True, False, None][k % 3]
        rows.append(HeatmapRow(image, heat, [(5, 8, 10, 12, 0)], "Mass", 0.87, hit, (10.0, 12.0)))
    rows[0] = tuple(vars(rows[0]).values())  # plain tuples are accepted too
    pages = write_heatmap_pages(rows, tmp_path / "figs", prefix="run", panel_inches=1.0, dpi=50)
    assert [p.name for p in pages] == ["run_000.png", "run_001.png", "run_002.png"]
    for path, n_rows in zip(pages, [10, 10, 3], strict=True):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as png:
            assert png.size == (2 * 50, n_rows * 50)  # 2 panels x rows, 1 inch each at 50 dpi
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [p.name for p in pages]


def test_titles_and_bad_rows(tmp_path):
    assert HeatmapRow(None, None, [], "Mass", 0.866, True).title == "Mass p=0.87 hit"
    assert HeatmapRow(None, None, [], "Mass", 0.1, False).title == "Mass p=0.10 miss"
    assert HeatmapRow(None, None, [], "Mass", 0.1).title == "Mass p=0.10"
    with pytest.raises(ValueError, match="heatmap row"):
        write_heatmap_pages([(np.zeros((4, 4)), np.zeros((2, 2)))], tmp_path)
    assert write_heatmap_pages([], tmp_path) == []


def test_reference_style_overlay_matches_a_hand_computation():
    import cv2 as cv

    image = np.array([[0, 255], [128, 64]], dtype=np.uint8)
    heat = np.array([[0.2, 0.6], [0.4, 0.2]], dtype=np.float32)
    out = overlay_image(image, heat, style="reference")
    # by hand: scaled = (heat - 0.2) / 0.4; JET of 255 * (1 - scaled), read as RGB; add to the
    # image with weight 0.5; divide by the maximum; back to uint8
    scaled = np.array([[0.0, 1.0], [0.5, 0.0]])
    jet = cv.applyColorMap(np.uint8(255 * (1 - scaled)), cv.COLORMAP_JET) / 255.0
    total = np.repeat(image[:, :, None] / 255.0, 3, axis=2) + 0.5 * jet
    expected = np.uint8(np.round(255 * total / total.max()))
    np.testing.assert_array_equal(out, expected)
    # the highest value is red in the reference's figures
    peak = out[0, 1].astype(int)
    assert peak[0] > peak[2]


def test_pages_say_which_style_they_use(tmp_path):
    import matplotlib

    from pylon.evaluation.pages import draw_heatmap_row

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    row = HeatmapRow(np.zeros((8, 8), np.uint8), np.full((2, 2), 0.5), [], "nodule", 0.9)
    for style, words in (("reference", "min-max"), ("probability", "absolute")):
        fig, axes = plt.subplots(1, 2)
        draw_heatmap_row(axes, row, style=style)
        assert words in axes[1].get_title()
        plt.close(fig)
