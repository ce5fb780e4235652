"""The equivariance loss: views against explicit coordinate formulas, the inverse, and the loss
against a float64 loop written from its definition."""

import math

import pytest
import torch

from pylon.training.equivariance import (
    DIHEDRAL,
    apply_views,
    equivariance_loss,
    random_views,
)


def _where(flip: bool, turns: int, r: int, c: int, h: int, w: int) -> tuple[int, int]:
    """Where pixel (r, c) of an h x w map lands: flip left-right, then quarter turns, each
    taking (r, c) of an H x W map to (W - 1 - c, r) (counter-clockwise, as numpy's rot90)."""
    if flip:
        c = w - 1 - c
    for _ in range(turns):
        r, c, h, w = w - 1 - c, r, w, h
    return r, c


@pytest.mark.parametrize("k", range(8))
def test_views_move_pixels_as_the_formulas_say_and_invert(k):
    flip, turns = DIHEDRAL[k]
    x = torch.zeros(1, 2, 6, 6)
    x[0, 1, 1, 4] = 1.0
    moved = apply_views(x, torch.tensor([k]))
    r, c = _where(flip, turns, 1, 4, 6, 6)
    assert moved[0, 1, r, c] == 1.0 and moved.sum() == 1.0
    noise = torch.randn(3, 2, 6, 6)
    views = torch.tensor([k, 0, (k + 3) % 8])
    assert torch.equal(apply_views(apply_views(noise, views), views, inverse=True), noise)


def test_non_square_inputs_only_get_shape_keeping_views():
    torch.manual_seed(0)
    views = random_views(500, square=False)
    assert set(views.tolist()) == {k for k, (_, t) in enumerate(DIHEDRAL) if k and t % 2 == 0}
    assert set(random_views(500, square=True).tolist()) == set(range(1, 8))  # never identity
    x = torch.randn(4, 1, 4, 8)
    assert torch.equal(apply_views(apply_views(x, views[:4]), views[:4], inverse=True), x)
    with pytest.raises(ValueError, match="square"):
        apply_views(x, torch.tensor([1, 0, 0, 0]))


def _reference_loss(cam, cam_of_view, views, labels) -> float:
    total, count = 0.0, 0
    for n in range(cam.shape[0]):
        flip, turns = DIHEDRAL[int(views[n])]
        h, w = cam.shape[-2:]
        for c in range(cam.shape[1]):
            if labels[n, c] == 0:
                continue
            p = torch.softmax(cam[n, c].double().flatten(), 0).view(h, w)
            q_view = torch.softmax(cam_of_view[n, c].double().flatten(), 0).view(h, w)
            kl_pq = kl_qp = 0.0
            for r in range(h):
                for col in range(w):
                    rv, cv = _where(flip, turns, r, col, h, w)
                    a, b = float(p[r, col]), float(q_view[rv, cv])
                    kl_pq += a * math.log(a / b)
                    kl_qp += b * math.log(b / a)
            total += 0.5 * (kl_pq + kl_qp)
            count += 1
    return total / max(count, 1)


def test_loss_matches_a_loop_from_the_definition():
    torch.manual_seed(1)
    cam, cam_of_view = torch.randn(4, 3, 5, 5) * 2, torch.randn(4, 3, 5, 5) * 2
    views = torch.tensor([1, 5, 6, 3])
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    got = equivariance_loss(cam, cam_of_view, views, labels)
    assert got.item() == pytest.approx(_reference_loss(cam, cam_of_view, views, labels), rel=1e-5)


def test_equivariant_maps_cost_nothing_and_offsets_do():
    torch.manual_seed(2)
    cam = torch.randn(8, 2, 16, 16) * 3
    labels = torch.ones(8, 2)
    views = random_views(8, square=True)
    assert equivariance_loss(cam, apply_views(cam, views), views, labels).item() == pytest.approx(
        0.0, abs=1e-6
    )
    # a peak two cells off in the network's frame, whatever the view: costs, unless absent
    peak = torch.full((8, 2, 16, 16), -5.0)
    peak[:, :, 6, 6] = 5.0
    shifted = apply_views(peak, views).roll(2, dims=-2)
    assert equivariance_loss(peak, shifted, views, labels) > 1.0
    assert equivariance_loss(peak, shifted, views, torch.zeros(8, 2)).item() == 0.0
