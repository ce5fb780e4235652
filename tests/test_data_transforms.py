"""Reference augmentation pipelines: normalisation, eval resize, boxes following the pixels."""

import numpy as np
import pytest

from pylon.data.transforms import apply_transform, build_transform, normalization


def test_eval_resize_and_normalise_by_hand():
    image = np.full((100, 120, 1), 128, np.uint8)
    out, boxes = apply_transform(
        build_transform("xray", 64, train=False), image, [(30, 20, 40, 30, 2)]
    )
    assert out.shape == (1, 64, 64)
    np.testing.assert_allclose(out.numpy(), (128 / 255 - 0.4984) / 0.2483, rtol=1e-5)
    x, y, w, h, c = boxes[0]
    np.testing.assert_allclose(
        (x, y, w, h), (30 * 64 / 120, 20 * 64 / 100, 40 * 64 / 120, 30 * 64 / 100), rtol=1e-5
    )
    assert c == 2


def test_voc_eval_uses_imagenet_statistics():
    image = np.zeros((50, 50, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 255, 0, 51
    out, _ = apply_transform(build_transform("voc", 32, train=False, in_channels=3), image)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for c, value in enumerate((1.0, 0.0, 0.2)):
        np.testing.assert_allclose(out[c].numpy(), (value - mean[c]) / std[c], rtol=1e-5)


def test_normalization_constants():
    assert normalization("xray", 1) == ([0.4984], [0.2483])
    assert normalization("xray", 3) == ([0.4984] * 3, [0.2483] * 3)
    with pytest.raises(ValueError, match="3 input channels"):
        normalization("voc", 1)
    with pytest.raises(ValueError, match="unknown transform kind"):
        build_transform("ct", 64, True)


@pytest.mark.parametrize("kind,channels", [("xray", 1), ("voc", 3)])
def test_train_boxes_still_frame_the_bright_region(kind, channels):
    size = 96
    image = np.zeros((120, 100, channels), np.uint8)
    box = (25, 40, 30, 20)  # x, y, w, h
    image[40:60, 25:55] = 255
    transform = build_transform(kind, size, train=True, in_channels=channels)
    checked = 0
    for seed in range(30):
        transform.set_random_seed(seed)
        out, boxes = apply_transform(transform, image, [(*box, 1)])
        assert out.shape == (channels, size, size)
        pixels = out.numpy().mean(axis=0)
        low, high = pixels.min(), pixels.max()
        if not boxes or high - low < 1e-3:
            continue
        rows, cols = np.nonzero(pixels > (low + high) / 2)
        x, y, w, h, c = boxes[0]
        assert c == 1
        # The box may be clipped at the crop border exactly like the region, so compare extents.
        tol = 3.0
        assert abs(cols.min() - x) <= tol and abs(cols.max() + 1 - (x + w)) <= tol, (seed, boxes)
        assert abs(rows.min() - y) <= tol and abs(rows.max() + 1 - (y + h)) <= tol, (seed, boxes)
        checked += 1
    assert checked >= 15


def _steps(kind, size, train, channels):
    from pylon.data.transforms import build_transform

    return build_transform(kind, size, train, in_channels=channels)


# Written from the reference's data/transform.py (XRayTransformConfig) and data/voc.py
# (VOCTransformConfig): step, its parameters; interpolation cubic everywhere.
REFERENCE = {
    ("xray", True): [
        ("Rotate", {"limit": (-90, 90), "p": 0.5, "border_mode": 0, "fill": 0}),
        ("RandomResizedCrop", {"scale": (0.7, 1.0), "ratio": (3 / 4, 4 / 3), "p": 1.0}),
        ("HorizontalFlip", {"p": 0.5}),
        (
            "RandomBrightnessContrast",
            {"brightness_limit": (-0.5, 0.5), "contrast_limit": (-0.5, 0.5), "p": 0.5},
        ),
        ("Normalize", {"mean": (0.4984,), "std": (0.2483,), "max_pixel_value": 255.0}),
        ("ToTensorV2", {}),
    ],
    ("voc", True): [
        ("Rotate", {"limit": (-10, 10), "p": 0.5, "border_mode": 0, "fill": 0}),
        ("Resize", {"height": 512, "width": 512}),
        ("RandomResizedCrop", {"scale": (0.5, 1.0), "ratio": (1.0, 1.0), "p": 0.5}),
        ("Resize", {"height": 256, "width": 256}),
        ("HorizontalFlip", {"p": 0.5}),
        # ColorJitter(0.2, 0.2, 0.2, 0.2) with albumentations' default p 0.5
        (
            "ColorJitter",
            {
                "brightness": (0.8, 1.2),
                "contrast": (0.8, 1.2),
                "saturation": (0.8, 1.2),
                "hue": (-0.2, 0.2),
                "p": 0.5,
            },
        ),
        ("Normalize", {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}),
        ("ToTensorV2", {}),
    ],
    ("voc", False): [
        ("Resize", {"height": 256, "width": 256}),
        ("Normalize", {}),
        ("ToTensorV2", {}),
    ],
}


@pytest.mark.parametrize(("kind", "train"), list(REFERENCE))
def test_pipelines_follow_the_reference(kind, train):
    import cv2

    pipeline = _steps(kind, 256, train, 3 if kind == "voc" else 1)
    steps = list(pipeline.transforms)
    assert [type(t).__name__ for t in steps] == [name for name, _ in REFERENCE[kind, train]]
    for step, (_, params) in zip(steps, REFERENCE[kind, train], strict=True):
        for key, value in params.items():
            got = getattr(step, key)
            assert tuple(got) == pytest.approx(value) if isinstance(value, tuple) else got == value
        if hasattr(step, "interpolation"):
            assert step.interpolation == cv2.INTER_CUBIC, type(step).__name__
    visibility = pipeline.processors["bboxes"].params.min_visibility
    assert visibility == (0.5 if kind == "xray" else 0.0)


def _applied(pipeline, image, seed):
    """Which of the first four steps ran for ``seed`` (albumentations keeps a ran step's params)."""
    pipeline.set_random_seed(seed)
    pipeline(image=image, bboxes=[(5, 5, 20, 20)], class_indices=[0])
    return [bool(step.params) for step in pipeline.transforms[:4]]


def test_seeded_steps_draw_independently():
    # Rotate, HorizontalFlip and RandomBrightnessContrast each run with p 0.5 on their own; with
    # one seed per step (albumentations' set_random_seed) they would all run together or not.
    pipeline = build_transform("xray", 32, train=True)
    image = np.random.default_rng(0).integers(0, 256, (48, 48, 1), dtype=np.uint8)
    runs = np.array([_applied(pipeline, image, seed) for seed in range(400)])
    rotate, flip, contrast = runs[:, 0], runs[:, 2], runs[:, 3]
    assert runs[:, 1].all()  # RandomResizedCrop, p 1
    for ran in (rotate, flip, contrast):
        assert 0.4 < ran.mean() < 0.6
    for a, b in ((rotate, flip), (rotate, contrast), (flip, contrast)):
        # independent events with p 0.5 agree about half the time
        assert 0.4 < (a == b).mean() < 0.6


@pytest.mark.parametrize("kind,channels", [("xray", 1), ("voc", 3)])
def test_box_free_images_get_the_same_pixels_as_with_boxes(kind, channels):
    pipeline = build_transform(kind, 40, train=True, in_channels=channels)
    image = np.random.default_rng(1).integers(0, 256, (60, 50, channels), dtype=np.uint8)
    for seed in range(12):
        pipeline.set_random_seed(seed)
        with_box, _ = apply_transform(pipeline, image, [(10, 10, 20, 30, 0)])
        pipeline.set_random_seed(seed)
        without, boxes = apply_transform(pipeline, image, [])
        assert boxes == []
        np.testing.assert_array_equal(with_box.numpy(), without.numpy())
        pipeline.set_random_seed(seed)
        again, _ = apply_transform(pipeline, image, [])
        np.testing.assert_array_equal(again.numpy(), without.numpy())
