"""What ``Predictor`` returns per image: probabilities, peaks in original pixels, heatmaps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch.nn.functional as F
from torch import Tensor

# The one network-to-original mapping and peak finder (re-exported for Predictor).
from pylon.evaluation.coordinates import input_to_original, peaks_in_original  # noqa: F401


@dataclass
class Prediction:
    """One image's results. ``peaks[c] = (x, y)`` is where class ``c``'s heatmap peaks, in the
    original image's pixels (column, row; 0-based pixel indices); ``selected`` are the classes
    above the threshold (or those chosen). A DICOM's ``pixel_spacing`` (``(row, column)`` mm,
    from ``spacing_attribute``: ``PixelSpacing``, else ``ImagerPixelSpacing``) gives the peaks in
    millimetres too (:attr:`peaks_mm`), and ``reading`` says how its pixels were read."""

    image_id: str
    path: str | None
    original_size: tuple[int, int]  # (height, width)
    probabilities: dict[str, float]
    peaks: dict[str, tuple[int, int]]
    selected: list[str]
    cam: Tensor = field(repr=False)  # (C, h, w) raw scores at the network's resolution
    # the uint8 image if kept: shrunk by ``pixels_scale`` (<= 1) to the predictor's display size
    pixels: np.ndarray | None = field(default=None, repr=False)
    pixels_scale: float = 1.0
    # what the decoders warned about this file (predicting with ``messages``), one line each
    warnings: list[str] = field(default_factory=list)
    pixel_spacing: tuple[float, float] | None = None
    spacing_attribute: str | None = None
    reading: str | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.probabilities)

    @property
    def peaks_mm(self) -> dict[str, tuple[float, float]] | None:
        """``peaks_mm[c] = (x_mm, y_mm)``: the peak's column times the column spacing and its
        row times the row spacing, i.e. millimetres right of and below the centre of the
        top-left pixel (rounded to 1e-6 mm); ``None`` when the spacing is unknown (not a DICOM,
        or one without ``PixelSpacing``/``ImagerPixelSpacing``). ``ImagerPixelSpacing`` measures
        at the detector, so distances in the patient are smaller by the geometric
        magnification."""
        if self.pixel_spacing is None:
            return None
        row_mm, col_mm = self.pixel_spacing
        return {c: (round(x * col_mm, 6), round(y * row_mm, 6)) for c, (x, y) in self.peaks.items()}

    def heatmap(self, class_name: str) -> np.ndarray:
        """``sigmoid(CAM)`` of ``class_name`` up-sampled (bilinear) to the original image size,
        float32 ``(H, W)`` in [0, 1]."""
        if class_name not in self.probabilities:
            raise ValueError(
                f"unknown class {class_name!r}; expected one of {', '.join(self.class_names)}"
            )
        index = self.class_names.index(class_name)
        cam = self.cam[index][None, None].float().sigmoid()
        up = F.interpolate(cam, size=self.original_size, mode="bilinear", align_corners=False)
        return up[0, 0].numpy()

    def probability_map(self, class_name: str) -> np.ndarray:
        """``sigmoid(CAM)`` of ``class_name`` at the network's resolution, float32 ``(h, w)``."""
        if class_name not in self.probabilities:
            raise ValueError(
                f"unknown class {class_name!r}; expected one of {', '.join(self.class_names)}"
            )
        return self.cam[self.class_names.index(class_name)].float().sigmoid().numpy()

    def overlay(self, class_name: str, *, style: str = "probability") -> np.ndarray:
        """The class's heatmap over the kept image with its peak ringed (uint8 RGB), drawn at the
        kept image's (display) size: never a full-resolution float map of a large image.

        Args:
            class_name: one of the model's classes.
            style: :data:`pylon.evaluation.overlay.STYLES` (default absolute probabilities).

        Returns:
            uint8 ``(h, w, 3)`` RGB at the display size.

        Raises:
            ValueError: when the prediction was made without ``keep_pixels``.
        """
        from pylon.evaluation.overlay import peak_overlay

        if self.pixels is None:
            raise ValueError(f"{self.image_id}: no pixels kept; predict with keep_pixels=True")
        x, y = self.peaks[class_name]
        scale = self.pixels_scale
        peak = (x * scale, y * scale)
        return peak_overlay(
            self.pixels, self.probability_map(class_name), peak, style=style, max_side=None
        )

    def heatmaps(self, classes: list[str] | None = None) -> dict[str, np.ndarray]:
        """:meth:`heatmap` of each of ``classes`` (default: the ``selected`` ones)."""
        return {c: self.heatmap(c) for c in (self.selected if classes is None else classes)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (no arrays); ``peaks_mm``, ``pixel_spacing``, ``spacing_attribute``
        and ``reading`` are ``None`` where unknown (images that are not DICOMs)."""
        height, width = self.original_size
        peaks_mm = self.peaks_mm
        return {
            "image_id": self.image_id,
            "path": self.path,
            "height": height,
            "width": width,
            "probabilities": self.probabilities,
            "peaks": {c: list(p) for c, p in self.peaks.items()},
            "peaks_mm": None if peaks_mm is None else {c: list(p) for c, p in peaks_mm.items()},
            "pixel_spacing": None if self.pixel_spacing is None else list(self.pixel_spacing),
            "spacing_attribute": self.spacing_attribute,
            "reading": self.reading,
            "selected": self.selected,
            "warnings": list(self.warnings),
        }


@dataclass
class Failure:
    """An input that could not be read or predicted, and why."""

    image_id: str
    path: str | None
    reason: str
    warnings: list[str] = field(default_factory=list)
