"""Augmentation pipelines of the reference recipe (X-ray and VOC) and their application to boxes."""

from __future__ import annotations

import os
import random

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network version check on import

from collections.abc import Sequence  # noqa: E402
from typing import Literal  # noqa: E402

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from albumentations.pytorch import ToTensorV2  # noqa: E402
from torch import Tensor  # noqa: E402

from pylon.data.sample import Box  # noqa: E402

TransformKind = Literal["xray", "voc"]

XRAY_MEAN: tuple[float, ...] = (0.4984,)
XRAY_STD: tuple[float, ...] = (0.2483,)
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)

# Cubic for both, as the reference's XRayTransformConfig and VOCTransformConfig.
INTERPOLATION: dict[str, int] = {"xray": cv2.INTER_CUBIC, "voc": cv2.INTER_CUBIC}
# Boxes kept after augmentation: X-ray boxes need half their area visible (the reference's
# bbox_min_visibility 0.5); VOC keeps any visible part (albumentations' default, as there), and
# a VOC image's labels are the classes of the boxes that survive.
MIN_VISIBILITY: dict[str, float] = {"xray": 0.5, "voc": 0.0}
VOC_CROP_MIN = 0.5  # the reference's VOC min_size: resize to size / 0.5, crop p 0.5 at scale 0.5..1
# Interpolation names of the preprocessing record (pylon.data.preprocessing) -> OpenCV flags.
CV2_INTERPOLATION: dict[str, int] = {
    "cubic": cv2.INTER_CUBIC,
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "nearest": cv2.INTER_NEAREST,
}


def normalization(kind: TransformKind, in_channels: int) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) on the [0, 1] pixel scale used by ``kind`` for ``in_channels``."""
    if kind == "xray":
        mean, std = XRAY_MEAN * in_channels, XRAY_STD * in_channels
    elif kind == "voc":
        if in_channels != 3:
            raise ValueError(f"the VOC transform expects 3 input channels, got {in_channels}")
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        raise ValueError(f"unknown transform kind {kind!r}; expected 'xray' or 'voc'")
    return list(mean), list(std)


class ReferenceCompose(A.Compose):
    """``A.Compose`` with boxes that (1) runs an identical box-free copy of its steps for images
    without boxes, skipping albumentations' per-step box bookkeeping (about 20 % of the time of a
    box-free image), and (2) draws every step's randomness from one stream per seed.

    (2) matters for seeded loaders: albumentations' ``set_random_seed`` gives every step its own
    generator with the *same* seed, so the first draws of all steps are equal and, with equal
    probabilities, Rotate, HorizontalFlip and RandomBrightnessContrast would be applied all
    together or not at all. One shared stream makes the draws independent, as in the reference,
    whose steps all drew from the global random state.
    """

    image_only: A.Compose | None = None

    def __call__(self, *args, force_apply: bool = False, **data):
        boxes = data.get("bboxes")
        if self.image_only is not None and boxes is not None and len(boxes) == 0 and not args:
            out = self.image_only(image=data["image"], force_apply=force_apply)
            return {**out, "bboxes": np.zeros((0, 4), np.float32), "class_indices": []}
        return super().__call__(*args, force_apply=force_apply, **data)

    def set_random_seed(self, seed: int | None) -> None:
        """Seed every step (and the box-free copy) from one shared stream."""
        generator, py_random = np.random.default_rng(seed), random.Random(seed)
        composes = [self] + ([self.image_only] if self.image_only is not None else [])
        for compose in composes:
            _share_stream(compose, seed, generator, py_random)


def _share_stream(transform, seed, generator: np.random.Generator, py_random: random.Random):
    transform.seed = seed
    transform.random_generator, transform.py_random = generator, py_random
    for child in getattr(transform, "transforms", ()):
        _share_stream(child, seed, generator, py_random)


def build_transform(
    kind: TransformKind,
    size: int,
    train: bool,
    *,
    in_channels: int = 1,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    interpolation: str | None = None,
) -> ReferenceCompose:
    """The reference albumentations pipeline for uint8 HxWxC images with COCO boxes.

    Call it with ``image=..., bboxes=[(x, y, w, h), ...], class_indices=[...]``; the result's
    image is a float CHW tensor. ``mean``/``std`` override the kind's normalisation constants,
    ``interpolation`` (a :data:`CV2_INTERPOLATION` name) the kind's interpolation. The result is a
    :class:`ReferenceCompose`: images without boxes take an identical box-free copy of the steps.
    """
    pipeline = ReferenceCompose(
        _steps(kind, size, train, in_channels, mean, std, interpolation),
        bbox_params=A.BboxParams(
            format="coco",
            min_visibility=MIN_VISIBILITY[kind],
            label_fields=["class_indices"],
            clip=True,
        ),
    )
    pipeline.image_only = A.Compose(
        _steps(kind, size, train, in_channels, mean, std, interpolation)
    )
    pipeline.set_random_seed(None)
    return pipeline


def _steps(
    kind: TransformKind,
    size: int,
    train: bool,
    in_channels: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    interpolation: str | None,
) -> list:
    """The pipeline's steps, Normalize and ToTensorV2 included (fresh instances per call)."""
    default_mean, default_std = normalization(kind, in_channels)
    normalize = A.Normalize(
        mean=list(mean) if mean is not None else default_mean,
        std=list(std) if std is not None else default_std,
        max_pixel_value=255.0,
    )
    interpolation = CV2_INTERPOLATION[interpolation] if interpolation else INTERPOLATION[kind]
    if not train:
        steps = [A.Resize(size, size, interpolation=interpolation)]
    elif kind == "xray":
        steps = [
            A.Rotate(
                limit=90,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=0.5,
                interpolation=interpolation,
            ),
            A.RandomResizedCrop(
                (size, size), scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3), interpolation=interpolation
            ),
            A.HorizontalFlip(p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.5, contrast_limit=0.5, p=0.5),
        ]
    else:
        big = int(size / VOC_CROP_MIN)
        steps = [
            A.Rotate(
                limit=10,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=0.5,
                interpolation=interpolation,
            ),
            A.Resize(big, big, interpolation=interpolation),
            A.RandomResizedCrop(
                (size, size),
                scale=(VOC_CROP_MIN, 1.0),
                ratio=(1.0, 1.0),
                p=0.5,
                interpolation=interpolation,
            ),
            A.Resize(size, size, interpolation=interpolation),
            A.HorizontalFlip(p=0.5),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.2, p=0.5),
        ]
    return [*steps, normalize, ToTensorV2()]


def apply_transform(
    transform: A.Compose, image: np.ndarray, boxes: Sequence[Sequence[float]] = ()
) -> tuple[Tensor, list[Box]]:
    """Run ``transform`` on a uint8 HxW(xC) image and ``(x, y, w, h, class_index)`` boxes.

    Returns the CHW float tensor and the boxes that survived, in the output image's pixels.
    """
    coords = [tuple(float(v) for v in box[:4]) for box in boxes]
    classes = [int(box[4]) for box in boxes]
    out = transform(image=image, bboxes=coords, class_indices=classes)
    out_boxes: list[Box] = [
        (float(x), float(y), float(w), float(h), int(c))
        for (x, y, w, h), c in zip(
            np.asarray(out["bboxes"]).reshape(-1, 4), out["class_indices"], strict=True
        )
    ]
    return out["image"].float(), out_boxes
