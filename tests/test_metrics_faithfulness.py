"""Faithfulness metrics against loops written from their definitions and hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from pylon.metrics.faithfulness import (
    blur,
    blur_kernel,
    causal_curves,
    confidence_change,
    road,
    trapezoid_auc,
)


def linear_scores(weights: torch.Tensor):
    """A toy multi-label model: sigmoid of a per-class weighted pixel sum."""

    def score(x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.einsum("nchw,kchw->nk", x.double(), weights)).float()

    return score


def naive_curve(score_fn, image, saliency, cls, mode, steps):
    """RISE's CausalMetric as its paper describes it: one pixel batch at a time."""
    _, h, w = image.shape
    step = math.ceil(h * w / steps)
    n_steps = math.ceil(h * w / step)
    order = sorted(range(h * w), key=lambda p: (-float(saliency.reshape(-1)[p]), p))
    if mode == "deletion":
        start, finish = image.clone(), torch.zeros_like(image)
    else:
        start, finish = blur(image[None])[0], image.clone()
    values = []
    current = start.clone()
    for i in range(n_steps + 1):
        values.append(float(score_fn(current[None])[0, cls]))
        for p in order[i * step : (i + 1) * step]:
            current[:, p // w, p % w] = finish[:, p // w, p % w]
    values = np.array(values)
    auc = (values.sum() - values[0] / 2 - values[-1] / 2) / (len(values) - 1)
    return values, auc


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
@pytest.mark.parametrize("steps", [7, 20])
def test_causal_curves_match_the_definition(mode, steps):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(3, 2, 9, 11, generator=g)
    maps = torch.rand(3, 9, 11, generator=g)
    maps[1, :3, :] = 0.5  # ties: the lower flat index moves first
    weights = torch.randn(4, 2, 9, 11, generator=g, dtype=torch.float64) * 0.1
    score = linear_scores(weights)
    classes = [0, 3, 2]
    curves, auc = causal_curves(score, images, maps, classes, mode=mode, steps=steps, batch_size=4)
    for i, cls in enumerate(classes):
        expected, expected_auc = naive_curve(score, images[i], maps[i], cls, mode, steps)
        np.testing.assert_allclose(curves[i].numpy(), expected, rtol=0, atol=1e-6)
        assert auc[i].item() == pytest.approx(expected_auc, abs=1e-6)


def test_deletion_of_a_mean_score_is_a_line_with_area_one_half():
    ones = torch.ones(1, 1, 4, 4)
    curves, auc = causal_curves(
        lambda x: x.mean(dim=(1, 2, 3))[:, None], ones, torch.rand(1, 4, 4), [0], steps=16
    )
    np.testing.assert_allclose(curves[0].numpy(), 1 - np.arange(17) / 16, atol=1e-7)
    assert auc.item() == pytest.approx(0.5)
    assert trapezoid_auc(torch.tensor([0.0, 1.0, 1.0])).item() == pytest.approx(0.75)


def test_blur_kernel_is_rise_gaussian():
    k = blur_kernel()
    assert k.shape == (11, 11)
    assert torch.allclose(k, k.flip(0)) and torch.allclose(k, k.T)
    assert k.sum().item() == pytest.approx(1.0, abs=1e-3)  # reflect-mode filter keeps the mass
    constant = torch.full((1, 1, 31, 31), 2.0)
    inner = blur(constant)[0, 0, 5:-5, 5:-5]
    assert torch.allclose(inner, torch.full_like(inner, 2.0 * k.sum().item()), atol=1e-5)


def test_confidence_change_by_hand():
    score = lambda x: x.mean(dim=(1, 2, 3))[:, None].clamp(0, 1)  # noqa: E731
    images = torch.ones(2, 1, 4, 4)
    maps = torch.stack([torch.full((4, 4), 0.5), torch.ones(4, 4)])
    out = confidence_change(score, images, maps, [0, 0])
    np.testing.assert_allclose(out["score"].numpy(), [1, 1])
    np.testing.assert_allclose(out["explanation_score"].numpy(), [0.5, 1])
    np.testing.assert_allclose(out["drop"].numpy(), [0.5, 0.0])
    np.testing.assert_allclose(out["increase"].numpy(), [0, 0])
    # before normalisation: x = (I - m) / s with I = 0.8, m = 0.5, s = 0.25 -> x = 1.2
    normed = torch.full((1, 1, 4, 4), 1.2)
    half = torch.full((1, 4, 4), 0.5)
    out = confidence_change(score, normed, half, [0], mean=[0.5], std=[0.25])
    # image times map: 0.4, normalised: (0.4 - 0.5) / 0.25 = -0.4, clamped score 0
    assert out["explanation_score"].item() == pytest.approx(0.0)
    assert out["drop"].item() == pytest.approx(1.0)
    # the increase is counted when O > Y
    low = torch.full((1, 1, 4, 4), -1.0)
    out = confidence_change(lambda x: torch.sigmoid(x.mean(dim=(1, 2, 3)))[:, None], low, half, [0])
    assert out["increase"].item() == 1.0 and out["drop"].item() == 0.0


def test_confidence_change_refuses_maps_outside_unit_range():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        confidence_change(lambda x: x.mean((1, 2, 3))[:, None], torch.ones(1, 1, 4, 4),
                          torch.full((1, 4, 4), 2.0), [0])  # fmt: skip


def test_road_is_seeded_and_equals_pytorch_grad_cam():
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage

    g = torch.Generator().manual_seed(1)
    images = torch.randn(2, 1, 12, 12, generator=g)
    maps = torch.rand(2, 12, 12, generator=g)
    weights = torch.randn(3, 1, 12, 12, generator=g, dtype=torch.float64) * 0.2
    score = linear_scores(weights)
    first = road(score, images, maps, [0, 2], percentiles=[20, 60], seed=3)
    again = road(score, images, maps, [0, 2], percentiles=[20, 60], seed=3)
    for key in ("morf", "lerf", "combined"):
        assert torch.equal(first[key], again[key])
    torch.manual_seed(3)
    targets = [lambda o: o[0], lambda o: o[2]]
    direct = ROADMostRelevantFirstAverage([20, 60])(images, maps.numpy(), targets, score)
    np.testing.assert_allclose(first["morf"].numpy(), direct, rtol=1e-6)
    np.testing.assert_allclose(first["combined"], (first["lerf"] - first["morf"]) / 2)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="maps: expected"):
        causal_curves(lambda x: x, torch.ones(2, 1, 4, 4), torch.ones(2, 5, 4), [0, 0])
    with pytest.raises(ValueError, match="class_index"):
        causal_curves(lambda x: x, torch.ones(2, 1, 4, 4), torch.ones(2, 4, 4), [0])
    with pytest.raises(ValueError, match="mode"):
        causal_curves(lambda x: x, torch.ones(1, 1, 4, 4), torch.ones(1, 4, 4), [0], mode="x")
