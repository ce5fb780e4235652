"""Faithfulness of saliency maps: does removing what a map points at change the model's score?

Three families, each scoring one (image, class) pair with the model's probability for that class
(a multi-label sigmoid model: the target is the class's sigmoid, never a softmax):

- **Deletion and insertion** (Petsiuk et al. 2018, RISE, ``evaluation.py`` ``CausalMetric``):
  pixels are moved in order of decreasing saliency, ``step`` at a time, from a start image to a
  finish image (deletion: the image to a zero substrate; insertion: a blurred image to the
  image), the class probability is read after every step (``n + 1`` points, the untouched start
  included) and the curve's area is the trapezoid rule on ``[0, 1]``. Low deletion and high
  insertion areas mean a faithful map. The blur is RISE's: an 11 x 11 kernel of
  ``scipy.ndimage.gaussian_filter(delta, 5)``, zero padding. Pixels of equal saliency are taken
  in a stable order (lower flat index first); RISE's unstable ``argsort`` leaves that order to
  numpy's quicksort.
- **Average drop and increase in confidence** (Chattopadhyay et al. 2018, Grad-CAM++): with
  ``Y`` the probability on the image and ``O`` on the image multiplied by the map (in [0, 1]),
  drop = ``max(0, Y - O) / Y`` (the paper's "Average Drop %" is its mean x 100) and increase =
  ``O > Y``. The perturbed images are scored through pytorch-grad-cam's
  ``PerturbationConfidenceMetric``; its ``DropInConfidence`` is *not* divided by ``Y``, so it is
  not the paper's figure, and is not used. Multiplication happens on the image before
  normalisation when ``mean``/``std`` are given (the paper multiplies the image), else on the
  model's input, as pytorch-grad-cam does.
- **ROAD** (Rong et al. 2022, pytorch-grad-cam ``metrics/road.py``): pytorch-grad-cam's own
  classes, remove-most-relevant-first (MoRF), least-relevant-first (LeRF) and their combination
  averaged over percentiles; their imputation adds ``torch.randn`` noise, which runs here under a
  fixed seed so results repeat.

Every function takes ``score_fn``: a callable from a batch of model inputs (B, C, H, W) to class
probabilities (B, K), and maps at the input's size in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

ScoreFn = Callable[[Tensor], Tensor]
BLUR_SIZE = 11
BLUR_SIGMA = 5.0
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _check_inputs(images: Tensor, maps: Tensor, class_index: Sequence[int] | Tensor) -> Tensor:
    if images.ndim != 4:
        raise ValueError(f"images: expected (N, C, H, W), got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    if tuple(maps.shape) != (n, h, w):
        raise ValueError(
            f"maps: expected ({n}, {h}, {w}) (one map per image at the input size), got "
            f"{tuple(maps.shape)}"
        )
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("maps hold NaN or infinity")
    classes = torch.as_tensor(class_index, dtype=torch.long).reshape(-1)
    if len(classes) != n:
        raise ValueError(f"class_index: expected {n} class indices, got {len(classes)}")
    return classes


def blur_kernel(size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """RISE's insertion blur: ``gaussian_filter`` of a centred delta, (size, size) float32."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1
    return torch.from_numpy(gaussian_filter(delta, sigma)).float()


def blur(images: Tensor, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> Tensor:
    """Each channel convolved with :func:`blur_kernel` (zero padding, same size)."""
    c = images.shape[1]
    kernel = blur_kernel(size, sigma).to(images)[None, None].expand(c, 1, size, size)
    return F.conv2d(images, kernel, padding=size // 2, groups=c)


def trapezoid_auc(curve: Tensor) -> Tensor:
    """Area under curves of ``n + 1`` evenly spaced points on [0, 1], (..., n + 1) -> (...)."""
    n = curve.shape[-1] - 1
    return (curve.sum(-1) - curve[..., 0] / 2 - curve[..., -1] / 2) / n


def causal_curves(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    class_index: Sequence[int] | Tensor,
    *,
    mode: str = "deletion",
    steps: int = 100,
    batch_size: int = 32,
) -> tuple[Tensor, Tensor]:
    """Deletion or insertion curves and their areas, one per (image, class) pair.

    Args:
        score_fn: model inputs (B, C, H, W) -> class probabilities (B, K).
        images: model inputs (N, C, H, W), one per pair (repeat an image for several classes).
        maps: saliency (N, H, W) at the input size; larger means more salient.
        class_index: the class scored for each image, (N,).
        mode: ``"deletion"`` (image -> zeros) or ``"insertion"`` (blurred image -> image).
        steps: the number of steps; ``step = ceil(H * W / steps)`` pixels move per step and
            the curve has ``ceil(H * W / step) + 1`` points.
        batch_size: perturbed images per ``score_fn`` call.

    Returns:
        ``(curves, auc)``: (N, points) float64 probabilities and (N,) float64 areas.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode={mode!r}; expected 'deletion' or 'insertion'")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps={steps}, batch_size={batch_size}; expected integers >= 1")
    classes = _check_inputs(images, maps, class_index)
    n, c, h, w = images.shape
    step = math.ceil(h * w / steps)
    points = math.ceil(h * w / step) + 1
    moved = torch.arange(points) * step  # pixels taken from the finish image at each point
    curves = torch.empty(n, points, dtype=torch.float64)
    with torch.no_grad():
        for i in range(n):
            image = images[i : i + 1]
            start, finish = (
                (image, torch.zeros_like(image)) if mode == "deletion" else (blur(image), image)
            )
            order = torch.argsort(maps[i].reshape(-1), descending=True, stable=True)
            rank = torch.empty(h * w, dtype=torch.long)
            rank[order] = torch.arange(h * w)
            rank = rank.reshape(1, 1, h, w)
            for first in range(0, points, batch_size):
                count = moved[first : first + batch_size].reshape(-1, 1, 1, 1)
                batch = torch.where(rank.to(images.device) < count.to(images.device), finish, start)
                probs = score_fn(batch)[:, classes[i]]
                curves[i, first : first + len(count)] = probs.double().cpu()
    return curves, trapezoid_auc(curves)


def _multiply(mean, std) -> Callable[[Tensor, Tensor], Tensor]:
    """The perturbation of average drop: image times map, before normalisation if known."""
    if mean is None or std is None:
        return lambda x, cam: x * cam
    mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1, 1, 1)
    return lambda x, cam: ((x * std_t.to(x) + mean_t.to(x)) * cam - mean_t.to(x)) / std_t.to(x)


def confidence_change(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    class_index: Sequence[int] | Tensor,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> dict[str, Tensor]:
    """Grad-CAM++'s drop and increase in confidence, one value per (image, class) pair.

    Args:
        score_fn: model inputs (B, C, H, W) -> class probabilities (B, K).
        images: model inputs (N, C, H, W), one per pair.
        maps: saliency (N, H, W) in [0, 1] at the input size.
        class_index: the class scored for each image, (N,).
        mean, std: the input normalisation (per channel); given, the image is multiplied by
            the map before normalisation (the paper's definition), else the input is.

    Returns:
        ``{"score": Y, "explanation_score": O, "drop": max(0, Y - O) / Y, "increase": O > Y}``,
        (N,) float64 each (``drop`` NaN where ``Y`` is 0). "Average Drop %" is
        ``100 * drop.mean()`` and "% Increase in Confidence" ``100 * increase.mean()``.
    """
    from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric

    classes = _check_inputs(images, maps, class_index)
    if bool((maps < 0).any() or (maps > 1).any()):
        raise ValueError("maps: expected values in [0, 1] (the map multiplies the image)")
    targets = [lambda out, k=int(k): out[k] for k in classes]
    with torch.no_grad():
        y = score_fn(images)[torch.arange(len(classes)), classes].double().cpu()
    metric = PerturbationConfidenceMetric(_multiply(mean, std))
    o = metric(images, maps.cpu().numpy(), targets, score_fn, return_diff=False)
    o = torch.from_numpy(np.asarray(o, dtype=np.float64))
    drop = torch.where(y > 0, (y - o).clamp(min=0) / y.clamp(min=1e-300), math.nan)
    return {"score": y, "explanation_score": o, "drop": drop, "increase": (o > y).double()}


def road(
    score_fn: ScoreFn,
    images: Tensor,
    maps: Tensor,
    class_index: Sequence[int] | Tensor,
    *,
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    seed: int = 0,
) -> dict[str, Tensor]:
    """ROAD through pytorch-grad-cam, one value per (image, class) pair.

    Args:
        score_fn: model inputs (B, C, H, W) -> class probabilities (B, K).
        images: model inputs (N, C, H, W), one per pair.
        maps: saliency (N, H, W) in [0, 1] at the input size.
        class_index: the class scored for each image, (N,).
        percentiles: the removal percentiles averaged (pytorch-grad-cam's default 10..90).
        seed: seeds the imputer's noise (pytorch-grad-cam's is unseeded).

    Returns:
        ``{"morf": ..., "lerf": ..., "combined": (lerf - morf) / 2}``, (N,) float64 each: the
        change of the class probability after imputation averaged over the percentiles
        (MoRF: lower is better; LeRF and combined: higher is better).
    """
    from pytorch_grad_cam.metrics.road import (
        ROADLeastRelevantFirstAverage,
        ROADMostRelevantFirstAverage,
    )

    classes = _check_inputs(images, maps, class_index)
    targets = [lambda out, k=int(k): out[k] for k in classes]
    cams = maps.cpu().numpy()
    out = {}
    for name, kind in (
        ("morf", ROADMostRelevantFirstAverage),
        ("lerf", ROADLeastRelevantFirstAverage),
    ):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            with torch.no_grad():
                values = kind(list(percentiles))(images.cpu(), cams, targets, score_fn)
        out[name] = torch.from_numpy(np.asarray(values, dtype=np.float64)).reshape(-1)
    out["combined"] = (out["lerf"] - out["morf"]) / 2
    return out
