"""Pages of heatmap figures: original image | heatmap overlay with the ground-truth boxes."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from pylon.evaluation.overlay import DISPLAY_MAX_SIDE, STYLE_TITLES, fit_display, overlay_image
from pylon.io import atomic_path


@dataclass
class HeatmapRow:
    """One figure row; ``boxes`` (x, y, w, h, ...) and ``peak`` (row, col) in original pixels."""

    image: np.ndarray  # original resolution, (H, W) grayscale or (H, W, 3) RGB
    heatmap: np.ndarray  # (h, w) values in [0, 1], any resolution
    boxes: Sequence[Sequence[float]]
    class_name: str
    probability: float
    hit: bool | None = None
    peak: tuple[float, float] | None = field(default=None)

    @property
    def title(self) -> str:
        """``"<class> p=<probability>[ hit| miss]"``."""
        verdict = "" if self.hit is None else (" hit" if self.hit else " miss")
        return f"{self.class_name} p={self.probability:.2f}{verdict}"


def draw_heatmap_row(
    axes,
    row: HeatmapRow,
    *,
    alpha: float = 0.5,
    style: str = "reference",
    max_side: int | None = DISPLAY_MAX_SIDE,
) -> None:
    """Draw ``row`` on two matplotlib axes: the original image, then overlay + boxes + peak.

    Args:
        axes: two matplotlib axes.
        row: what to draw.
        alpha: the heatmap's weight.
        style: the overlay style (:data:`pylon.evaluation.overlay.STYLES`), named in the title.
        max_side: images are drawn at most this large on their longer side (axes keep the
            original's pixel coordinates).

    Returns:
        None; the axes are drawn on.
    """
    original_ax, overlay_ax = axes
    height, width = np.shape(row.image)[:2]
    # drawn at a bounded display size, placed in original pixel coordinates (imshow centres
    # pixel i at i), so boxes and the peak are drawn in the original's pixels either way
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    original_ax.imshow(fit_display(row.image, max_side)[0], extent=extent)
    original_ax.set_title(row.class_name, fontsize=9)
    overlay = overlay_image(row.image, row.heatmap, alpha=alpha, style=style, max_side=max_side)
    overlay_ax.imshow(overlay, extent=extent)
    edge = "white" if style == "reference" else "lime"  # the reference draws white boxes
    for box in row.boxes:
        x, y, w, h = (float(v) for v in box[:4])
        # imshow centres pixel i at i, so pixel edges sit at i - 0.5
        overlay_ax.add_patch(
            Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=edge, linewidth=1.5)
        )
    if row.peak is not None:
        overlay_ax.plot(row.peak[1], row.peak[0], marker="x", color="white", markersize=8, mew=2)
    overlay_ax.set_title(f"{row.title}\n({STYLE_TITLES[style]})", fontsize=9)
    for ax in axes:
        ax.set_axis_off()


def _as_row(row) -> HeatmapRow:
    if isinstance(row, HeatmapRow):
        return row
    if not 5 <= len(row) <= 7:
        raise ValueError(
            "a heatmap row is (image, heatmap, boxes, class_name, probability[, hit[, peak]]), "
            f"got {len(row)} items"
        )
    return HeatmapRow(*row)


def write_heatmap_pages(
    rows: Iterable[HeatmapRow | Sequence],
    out_dir: str | os.PathLike,
    rows_per_page: int = 10,
    prefix: str = "heatmaps",
    *,
    panel_inches: float = 3.5,
    dpi: int = 150,
    alpha: float = 0.5,
    style: str = "reference",
) -> list[Path]:
    """Write PNG pages of ``rows_per_page`` rows each as ``<out_dir>/<prefix>_<page>.png``.

    Args:
        rows: ``HeatmapRow`` objects or tuples (image, heatmap, boxes, class_name, probability,
            hit, peak) with the last two optional.
        out_dir: the folder (created if needed).
        rows_per_page: rows per page (the reference's 10).
        prefix: file name prefix.
        panel_inches, dpi: size of each panel and resolution of the PNG.
        alpha: the heatmap's weight.
        style: ``"reference"`` or ``"probability"`` (:data:`pylon.evaluation.overlay.STYLES`).

    Returns:
        The written pages (atomically), in order.
    """
    if rows_per_page < 1:
        raise ValueError(f"rows_per_page must be >= 1, got {rows_per_page}")
    rows = [_as_row(r) for r in rows]
    out_dir = Path(out_dir)
    pages = []
    for page, start in enumerate(range(0, len(rows), rows_per_page)):
        chunk = rows[start : start + rows_per_page]
        fig = Figure(figsize=(2 * panel_inches, len(chunk) * panel_inches), dpi=dpi)
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(chunk), 2, squeeze=False)
        for ax_pair, row in zip(axes, chunk, strict=True):
            draw_heatmap_row(ax_pair, row, alpha=alpha, style=style)
        fig.tight_layout()
        path = out_dir / f"{prefix}_{page:03d}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        pages.append(path)
    return pages
