"""Synthetic radiograph-like images with findings of several sizes and exact boxes.

The embedded default dataset: procedural, deterministic from ``(seed, split, index)``, rendered
in batches with torch so a training loop can see fresh images every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from pylon.data.preprocessing import Preprocessing, make_preprocessing
from pylon.data.sample import Box, Sample

SPLITS = ("train", "val", "test")
# Mean and std of the rendered pixels (measured over 2,000 default images), used to normalise.
PIXEL_MEAN = 0.40
PIXEL_STD = 0.19
_NOISE_BANK_SIZE = 512
_ANATOMY_PARAMS = 13
_SHAPES = ("disc", "lobulated", "ring", "patch")


@dataclass(frozen=True)
class FindingSpec:
    """One finding class: its drawn shape, size range (diameter in px), count and contrast.

    ``shape`` is one of ``disc``, ``lobulated`` (disc with a wavy edge), ``ring`` (bright rim,
    dark centre) and ``patch`` (large, elongated, textured). ``prevalence`` is the probability
    that an image holds this class; it then holds 1..``max_count`` instances. ``contrast`` is
    the brightness a finding adds (negative: a dark, lucent finding).
    """

    name: str
    shape: str
    min_size: float
    max_size: float
    prevalence: float = 0.4
    max_count: int = 1
    contrast: float = 0.35

    def __post_init__(self) -> None:
        if self.shape not in _SHAPES:
            raise ValueError(f"finding {self.name!r}: shape {self.shape!r} not in {_SHAPES}")
        if not 1 <= self.min_size <= self.max_size:
            raise ValueError(
                f"finding {self.name!r}: expected 1 <= min_size <= max_size, "
                f"got {self.min_size}, {self.max_size}"
            )
        if self.contrast == 0:
            raise ValueError(f"finding {self.name!r}: contrast must be non-zero (< 0: dark)")
        if not 0 <= self.prevalence <= 1 or self.max_count < 1:
            raise ValueError(
                f"finding {self.name!r}: expected prevalence in [0, 1] and max_count >= 1"
            )


DEFAULT_FINDINGS: tuple[FindingSpec, ...] = (
    FindingSpec("nodule", "disc", 5, 10, max_count=2, contrast=0.6),
    FindingSpec("cavity", "ring", 10, 20, contrast=0.6),
    FindingSpec("mass", "lobulated", 18, 36, contrast=0.5),
    FindingSpec("consolidation", "patch", 40, 90, contrast=0.45),
)


class SyntheticDataset(Dataset):
    """``num_images`` procedurally generated chest-X-ray-like images of ``size`` x ``size``.

    Image ``i`` of a split is a pure function of ``(seed, split, i)``; the splits draw from
    distinct seed streams so they never share an image. ``augment`` applies a random flip and
    90-degree rotation per sample (boxes follow exactly). Use ``generate_batch`` (or a
    DataLoader, which calls ``__getitems__``) to render many images in one vectorised pass.
    """

    splits: tuple[str, ...] = SPLITS  # the split names it reads

    in_channels = 1

    def __init__(
        self,
        root: str | None = None,
        split: str = "train",
        size: int = 256,
        augment: bool = False,
        *,
        num_images: int | None = None,
        seed: int = 0,
        findings: tuple[FindingSpec, ...] = DEFAULT_FINDINGS,
        noise: float = 0.03,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"synthetic split {split!r} unknown; expected one of {SPLITS}")
        if size < 32:
            raise ValueError(f"synthetic image size must be >= 32 px, got {size}")
        if not findings:
            raise ValueError("synthetic dataset needs at least one FindingSpec")
        del root  # generated, nothing to read
        self.split = split
        self.size = int(size)
        self.augment = bool(augment)
        self.num_images = int(num_images if num_images is not None else _DEFAULT_COUNTS[split])
        if self.num_images < 1:
            raise ValueError(f"synthetic num_images must be >= 1, got {self.num_images}")
        self.seed = int(seed)
        self.findings = tuple(findings)
        self.noise = float(noise)
        self.class_names = [f.name for f in self.findings]
        self.mean = [PIXEL_MEAN]
        self.std = [PIXEL_STD]
        self._split_code = SPLITS.index(split)
        bank_rng = np.random.default_rng([self.seed, 99])
        self._noise_bank = torch.from_numpy(
            bank_rng.standard_normal((_NOISE_BANK_SIZE, _NOISE_BANK_SIZE), dtype=np.float32)
        )

    @property
    def preprocessing(self) -> Preprocessing:
        """How a model trained on these images expects its inputs (served as X-rays)."""
        return make_preprocessing(
            "xray", self.size, self.in_channels, self.mean, self.std, self.class_names
        )

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> Sample:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Sample]:
        batch = self.generate_batch(indices)
        return [
            Sample(
                image=batch["image"][i],
                labels=batch["labels"][i],
                boxes=batch["boxes"][i],
                image_id=batch["image_id"][i],
            )
            for i in range(len(indices))
        ]

    def generate_batch(self, indices: list[int] | Tensor) -> dict[str, Any]:
        """Render images ``indices`` in one pass; returns a batch as ``pylon.data.collate`` does."""
        indices = [int(i) for i in indices]
        for i in indices:
            if i < 0:
                raise IndexError(f"synthetic index must be >= 0, got {i}")
        rngs = [np.random.default_rng([self.seed, self._split_code, i]) for i in indices]
        raw, boxes = self.render(rngs)
        if self.augment:
            raw, boxes = _flip_rotate(raw, boxes, rngs)
        labels = torch.zeros(len(indices), len(self.findings))
        for n, image_boxes in enumerate(boxes):
            for box in image_boxes:
                labels[n, box[4]] = 1.0
        return {
            "image": (raw - PIXEL_MEAN) / PIXEL_STD,
            "labels": labels,
            "boxes": boxes,
            "image_id": [f"synthetic-{self.split}-{self.seed}-{i}" for i in indices],
        }

    def render(self, rngs: list[np.random.Generator]) -> tuple[Tensor, list[list[Box]]]:
        """Draw one image in [0, 1] per generator; returns ``(N, 1, S, S)`` pixels and boxes."""
        size, n = self.size, len(rngs)
        anatomy = np.stack([rng.uniform(-1.0, 1.0, _ANATOMY_PARAMS) for rng in rngs])
        anatomy = anatomy.astype(np.float32)
        # the background is smooth: render it at 1/4 resolution and up-sample (16x cheaper)
        coarse = max(size // 4, 16)
        background = _anatomy(torch.from_numpy(anatomy), coarse)
        lowfreq = np.stack([rng.standard_normal((8, 8), dtype=np.float32) for rng in rngs])
        background += (
            0.06
            * F.interpolate(
                torch.from_numpy(lowfreq)[:, None], size=(coarse, coarse), mode="bicubic"
            )[:, 0]
        )
        image = F.interpolate(background[:, None], size=(size, size), mode="bilinear")[:, 0]
        lungs = _lung_params(anatomy)
        offsets = np.stack([rng.integers(0, _NOISE_BANK_SIZE - size + 1, 2) for rng in rngs])
        for b, (oy, ox) in enumerate(offsets):
            image[b] += self.noise * self._noise_bank[oy : oy + size, ox : ox + size]
        # findings come last so that the background does not depend on them

        boxes: list[list[Box]] = [[] for _ in range(n)]
        for class_index, spec in enumerate(self.findings):
            params = []
            for b, rng in enumerate(rngs):
                if rng.random() >= spec.prevalence:
                    continue
                for _ in range(int(rng.integers(1, spec.max_count + 1))):
                    cx, cy = _point_in_lung(rng, lungs[b], size)
                    diameter = rng.uniform(spec.min_size, spec.max_size)
                    params.append((b, cx, cy, diameter, *rng.uniform(0.0, 1.0, 4)))
            if params:
                self._draw(image, boxes, class_index, spec, np.array(params))

        return image.clamp_(0.0, 1.0)[:, None], boxes

    def _draw(
        self,
        image: Tensor,
        boxes: list[list[Box]],
        class_index: int,
        spec: FindingSpec,
        params: np.ndarray,
    ) -> None:
        """Render every instance of one class as (F, P, P) patches, add them, record tight boxes."""
        batch_index = params[:, 0].astype(int)
        cx, cy, diameter = (torch.from_numpy(params[:, k]).float() for k in (1, 2, 3))
        u = torch.from_numpy(params[:, 4:]).float()
        half = int(math.ceil(spec.max_size * 0.8)) + 1
        x0 = torch.floor(cx).long() - half
        y0 = torch.floor(cy).long() - half
        grid = torch.arange(2 * half + 1, dtype=torch.float32)
        dx = (x0[:, None, None] + grid[None, None, :] + 0.5) - cx[:, None, None]
        dy = (y0[:, None, None] + grid[None, :, None] + 0.5) - cy[:, None, None]
        amplitude = spec.contrast * (0.8 + 0.4 * u[:, 0])
        patch = _shape(spec.shape, dx, dy, diameter / 2, u) * amplitude[:, None, None]

        visible = patch != 0  # the box frames every pixel the finding touches
        rows, cols = visible.any(dim=2), visible.any(dim=1)
        size, span = self.size, patch.shape[-1]
        for k in range(len(params)):
            b, top, left = int(batch_index[k]), int(y0[k]), int(x0[k])
            # clip the patch to the image
            t0, l0 = max(-top, 0), max(-left, 0)
            t1, l1 = min(size - top, span), min(size - left, span)
            if t0 >= t1 or l0 >= l1:
                continue
            image[b, top + t0 : top + t1, left + l0 : left + l1] += patch[k, t0:t1, l0:l1]
            r = torch.nonzero(rows[k]).flatten() + top
            c = torch.nonzero(cols[k]).flatten() + left
            r0, r1 = max(int(r[0]), 0), min(int(r[-1]), size - 1)
            c0, c1 = max(int(c[0]), 0), min(int(c[-1]), size - 1)
            if r0 <= r1 and c0 <= c1:
                boxes[b].append(
                    (float(c0), float(r0), float(c1 - c0 + 1), float(r1 - r0 + 1), class_index)
                )


_DEFAULT_COUNTS = {"train": 10_000, "val": 500, "test": 1_000}


def _anatomy(p: Tensor, size: int) -> Tensor:
    """Body, two dark lung fields with curved ribs, heart and spine; ``p`` is (N, 13) in [-1, 1].

    The body is shifted and scaled per image so that no fixed image position (such as the centre,
    which flips and rotations leave in place) marks where findings are.
    """
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    col = [p[:, k, None, None] for k in range(p.shape[1])]
    shift_x, shift_y, scale = _placement(col)
    y = (coords[None, :, None] - shift_y) / scale
    x = (coords[None, None, :] - shift_x) / scale

    body = torch.sigmoid((1 - ((x / (0.92 + 0.05 * col[0])) ** 2 + (y / 1.1) ** 2)) * 12)
    image = 0.12 + 0.45 * body
    lung = torch.zeros_like(image)
    for side in (-1.0, 1.0):
        lx = side * (0.42 + 0.04 * col[1])
        ly = -0.05 + 0.05 * col[2]
        rx, ry = 0.27 + 0.03 * col[3], 0.62 + 0.06 * col[4]
        d = ((x - lx) / rx) ** 2 + ((y - ly) / ry) ** 2
        lung = torch.maximum(lung, torch.sigmoid((1 - d) * 10))
    image = image - 0.28 * lung
    ribs = torch.cos((y + (0.25 + 0.1 * col[5]) * x**2) * (20 + 3 * col[6]) + 3 * col[7])
    image = image + 0.07 * lung * ribs.clamp(min=0) ** 4
    heart = ((x - 0.08 - 0.05 * col[8]) / 0.28) ** 2 + ((y - 0.3) / (0.3 + 0.04 * col[9])) ** 2
    image = image + 0.15 * torch.sigmoid((1 - heart) * 8)
    image = image + 0.12 * torch.exp(-((x / 0.07) ** 2)) * body
    return image


def _placement(col):
    """Shift (x, y) and scale of the body from anatomy parameters 10..12."""
    return 0.2 * col[10], 0.15 * col[11], 1.0 + 0.12 * col[12]


def _lung_params(anatomy: np.ndarray) -> np.ndarray:
    """Per image and side: lung centre and radii in [-1, 1] image units, shape (N, 2, 4)."""
    a = anatomy.astype(np.float64)
    shift_x, shift_y, scale = _placement([a[:, k] for k in range(a.shape[1])])
    out = np.empty((len(a), 2, 4), dtype=np.float64)
    for s, side in enumerate((-1.0, 1.0)):
        out[:, s, 0] = side * (0.42 + 0.04 * a[:, 1]) * scale + shift_x
        out[:, s, 1] = (-0.05 + 0.05 * a[:, 2]) * scale + shift_y
        out[:, s, 2] = (0.27 + 0.03 * a[:, 3]) * scale
        out[:, s, 3] = (0.62 + 0.06 * a[:, 4]) * scale
    return out


def _point_in_lung(rng: np.random.Generator, lungs: np.ndarray, size: int) -> tuple[float, float]:
    lx, ly, rx, ry = lungs[int(rng.integers(0, 2))]
    radius, angle = 0.85 * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
    x = lx + rx * radius * math.cos(angle)
    y = ly + ry * radius * math.sin(angle)
    return (x + 1) / 2 * size, (y + 1) / 2 * size


def _shape(shape: str, dx: Tensor, dy: Tensor, radius: Tensor, u: Tensor) -> Tensor:
    """Profile in [0, 1] of each finding on its patch; ``u`` (F, 4) holds uniform shape draws."""
    radius = radius[:, None, None]
    u = [u[:, k, None, None] for k in range(u.shape[1])]
    if shape == "patch":
        # elongated, rotated ellipse with soft edges and a fluffy texture
        theta = math.pi * u[1]
        a, b = radius, radius * (0.5 + 0.3 * u[2])
        along = dx * torch.cos(theta) + dy * torch.sin(theta)
        across = -dx * torch.sin(theta) + dy * torch.cos(theta)
        d = torch.sqrt((along / a) ** 2 + (across / b) ** 2)
        texture = 0.75 + 0.25 * torch.cos(along / 3 + 6 * u[3]) * torch.cos(across / 4)
        return ((1 - d) / 0.4).clamp(0, 1) * texture
    rho = torch.sqrt(dx**2 + dy**2)
    if shape == "lobulated":
        angle = torch.atan2(dy, dx)
        radius = radius * (1 + 0.15 * torch.sin(5 * angle + 6.3 * u[1])) / 1.15
    d = rho / radius
    if shape == "ring":
        return (1 - (d - 0.75).abs() / 0.25).clamp(0, 1)
    return ((1 - d) / 0.3).clamp(0, 1)


def _flip_rotate(
    images: Tensor, boxes: list[list[Box]], rngs: list[np.random.Generator]
) -> tuple[Tensor, list[list[Box]]]:
    """Random horizontal flip then ``k`` quarter turns per image; boxes follow exactly."""
    size = images.shape[-1]
    draws = [(int(rng.integers(0, 2)), int(rng.integers(0, 4))) for rng in rngs]
    out = images.clone()
    # transform the images in 8 groups (one per flip/turns combination) instead of one by one
    for flip in (0, 1):
        for turns in range(4):
            members = [n for n, d in enumerate(draws) if d == (flip, turns)]
            if not members:
                continue
            group = images[members]
            if flip:
                group = group.flip(-1)
            out[members] = torch.rot90(group, turns, dims=(-2, -1))
    out_boxes = []
    for image_boxes, (flip, turns) in zip(boxes, draws, strict=True):
        if flip:
            image_boxes = [(size - x - w, y, w, h, c) for x, y, w, h, c in image_boxes]
        for _ in range(turns):
            # torch.rot90 (counter-clockwise) moves pixel (row, col) to (size - 1 - col, row)
            image_boxes = [(y, size - x - w, h, w, c) for x, y, w, h, c in image_boxes]
        out_boxes.append(image_boxes)
    return out, out_boxes
