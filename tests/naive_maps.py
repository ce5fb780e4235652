"""Shared pieces of the metric tests' naive references: one map up-sampled as the reference
codes do, the union of boxes pixel by pixel, and the comparison of records with expected rows."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F


def interp(cam: torch.Tensor, height: int, width: int) -> np.ndarray:
    """One map up-sampled as the reference codes do: one ``F.interpolate`` call, float32."""
    up = F.interpolate(
        cam[None, None].float(), size=(height, width), mode="bilinear", align_corners=False
    )
    return up[0, 0].numpy()


def box_mask(cls_boxes, height: int, width: int) -> np.ndarray:
    """The union of the boxes, pixel by pixel."""
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h, _ in cls_boxes:
        for r in range(height):
            for c in range(width):
                if int(y) <= r < int(y) + int(h) and int(x) <= c < int(x) + int(w):
                    mask[r, c] = True
    return mask


def as_tuples(records):
    """``(image, class, value, box_area)`` per record."""
    return list(
        zip(
            records.image_index.tolist(),
            records.class_index.tolist(),
            records.value.tolist(),
            records.box_area.tolist(),
            strict=True,
        )
    )


def assert_same(records, expected, size, rel=0.0):
    """Records equal the expected ``(image, class, value, box_area)`` rows (NaN where NaN)."""
    got = as_tuples(records)
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    assert [g[3] for g in got] == [e[3] for e in expected]
    for g, e in zip(got, expected, strict=True):
        if math.isnan(e[2]):
            assert math.isnan(g[2]), (g, e)
        else:
            assert g[2] == pytest.approx(e[2], rel=rel, abs=rel), (g, e)
    assert records.image_area.tolist() == [size[0] * size[1]] * len(expected)
    assert records.value.dtype == torch.float64
