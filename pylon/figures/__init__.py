"""Heatmap figures: overlays of CAMs on the original images, and pages of them with boxes."""

from pylon.figures.heatmaps import HeatmapRow, draw_heatmap_row, write_heatmap_pages
from pylon.figures.overlay import image_to_rgb, overlay_image, resize_heatmap

__all__ = [
    "HeatmapRow",
    "draw_heatmap_row",
    "image_to_rgb",
    "overlay_image",
    "resize_heatmap",
    "write_heatmap_pages",
]
