"""The reference train pipelines stay uint8 until Normalize and convert to float once (issue 12.6:
what the loader's per-worker rate rests on, as stated in the README)."""

import albumentations as A
import numpy as np
import pytest
import torch

from pylon.data.transforms import apply_transform, build_transform


@pytest.mark.parametrize(("kind", "channels"), [("xray", 1), ("xray", 3), ("voc", 3)])
def test_steps_are_uint8_until_normalize_then_float32_once(kind, channels):
    image = np.random.default_rng(0).integers(0, 256, (96, 80, channels), np.uint8)
    pipeline = build_transform(kind, 64, True, in_channels=channels)
    pipeline.set_random_seed(0)
    steps = pipeline.image_only.transforms
    names = [type(t).__name__ for t in steps]
    assert names[-2:] == ["Normalize", "ToTensorV2"]
    for _ in range(20):  # every step applied in some of the draws
        data = {"image": image}
        for step in steps:
            before = data["image"]
            data = step(**data)
            if isinstance(step, A.Normalize):
                assert before.dtype == np.uint8 and data["image"].dtype == np.float32
            elif not isinstance(step, A.ToTensorV2):
                assert data["image"].dtype == np.uint8, type(step).__name__
    tensor, _ = apply_transform(pipeline, image, [])
    assert tensor.dtype == torch.float32 and tensor.shape == (channels, 64, 64)
