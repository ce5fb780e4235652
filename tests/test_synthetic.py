"""Synthetic dataset tests: determinism, splits, boxes checked against the drawn pixels."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.data import DataLoader

from pylon.data import collate, create_dataset
from pylon.data.synthetic import (
    DEFAULT_FINDINGS,
    PIXEL_MEAN,
    PIXEL_STD,
    FindingSpec,
    SyntheticDataset,
)

SIZE = 256


def _raw(batch: dict) -> torch.Tensor:
    """Undo the normalisation: pixels in [0, 1], shape (N, H, W)."""
    return batch["image"][:, 0] * PIXEL_STD + PIXEL_MEAN


def _findings_only(dataset: SyntheticDataset, indices: list[int]) -> torch.Tensor:
    """Pixels the findings add: the image minus the same image rendered with no findings."""
    empty = SyntheticDataset(
        split=dataset.split,
        size=dataset.size,
        num_images=dataset.num_images,
        seed=dataset.seed,
        findings=tuple(dataclasses.replace(f, prevalence=0.0) for f in dataset.findings),
    )
    return _raw(dataset.generate_batch(indices)) - _raw(empty.generate_batch(indices))


def _box_mask(boxes: list, class_index: int | None = None) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    for x, y, w, h, c in boxes:
        if class_index is None or c == class_index:
            mask[int(y) : int(y) + int(h), int(x) : int(x) + int(w)] = True
    return mask


def test_sample_format_and_dataloader():
    ds = create_dataset("synthetic", split="train", num_images=10)
    assert ds.augment is True and ds.in_channels == 1
    assert ds.class_names == [f.name for f in DEFAULT_FINDINGS] and len(ds.class_names) >= 4
    sample = ds[3]
    assert sample["image"].shape == (1, SIZE, SIZE) and sample["image"].dtype == torch.float32
    assert sample["labels"].shape == (len(ds.class_names),)
    assert isinstance(sample["image_id"], str)
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate)))
    assert batch["image"].shape == (4, 1, SIZE, SIZE) and len(batch["boxes"]) == 4
    # the batched path renders the same pixels as one item at a time
    torch.testing.assert_close(batch["image"][3], sample["image"], rtol=0, atol=0)


def test_deterministic_and_independent_of_batching():
    a = SyntheticDataset(split="val", seed=7, num_images=20)
    b = SyntheticDataset(split="val", seed=7, num_images=20)
    batch_a = a.generate_batch([2, 5, 11])
    batch_b = b.generate_batch([11, 5])
    torch.testing.assert_close(batch_a["image"][2], batch_b["image"][0], rtol=0, atol=0)
    torch.testing.assert_close(batch_a["image"][1], batch_b["image"][1], rtol=0, atol=0)
    assert batch_a["boxes"][1] == batch_b["boxes"][1]
    other_seed = SyntheticDataset(split="val", seed=8, num_images=20).generate_batch([2])
    assert not torch.equal(other_seed["image"][0], batch_a["image"][0])


def test_splits_never_share_images():
    indices = list(range(40))
    keys = {}
    for split in ("train", "val", "test"):
        ds = SyntheticDataset(split=split, augment=False, num_images=40)
        images = ds.generate_batch(indices)["image"]
        keys[split] = {hash(img.numpy().tobytes()) for img in images}
        assert len(keys[split]) == len(indices)
    assert not keys["train"] & keys["val"]
    assert not keys["train"] & keys["test"]
    assert not keys["val"] & keys["test"]


DARK = (FindingSpec("bulla", "disc", 10, 20, prevalence=0.8, contrast=-0.2),)


@pytest.mark.parametrize("findings", [DEFAULT_FINDINGS, DARK], ids=["default", "dark"])
def test_boxes_frame_the_drawn_findings(findings):
    ds = SyntheticDataset(split="test", augment=False, num_images=64, findings=findings)
    indices = list(range(32))
    batch = ds.generate_batch(indices)
    added = _findings_only(ds, indices)
    n_boxes = 0
    for n in range(len(indices)):
        boxes = batch["boxes"][n]
        n_boxes += len(boxes)
        # nothing is drawn outside the boxes
        assert added[n][~_box_mask(boxes)].abs().max() < 1e-6
        for x, y, w, h, _ in boxes:
            inside = added[n, int(y) : int(y + h), int(x) : int(x + w)].abs()
            assert inside.max() > 0.02
            # tight: each edge row and column of the box holds drawn pixels
            for edge in (inside[0], inside[-1], inside[:, 0], inside[:, -1]):
                assert edge.max() > 0
    assert n_boxes > 20


def test_labels_match_boxes_and_findings_are_brighter():
    ds = SyntheticDataset(split="train", augment=False, num_images=64)
    batch = ds.generate_batch(range(64))
    raw = _raw(batch)
    for n in range(64):
        classes = {box[4] for box in batch["boxes"][n]}
        expected = torch.zeros(len(ds.class_names))
        expected[list(classes)] = 1
        torch.testing.assert_close(batch["labels"][n], expected)
        for x, y, w, h, _ in batch["boxes"][n]:
            inside = raw[n, int(y) : int(y + h), int(x) : int(x + w)]
            pad = 4
            ring = raw[
                n, max(int(y) - pad, 0) : int(y + h) + pad, max(int(x) - pad, 0) : int(x + w) + pad
            ]
            assert inside.max() > ring.median()
    prevalence = batch["labels"].mean(0)
    assert (prevalence > 0.15).all() and (prevalence < 0.7).all()


def test_sizes_span_small_to_large():
    ds = SyntheticDataset(split="train", augment=False, num_images=200)
    batch = ds.generate_batch(range(200))
    sides: dict[int, list[float]] = {c: [] for c in range(len(ds.class_names))}
    for boxes in batch["boxes"]:
        for _, _, w, h, c in boxes:
            sides[c].append(max(w, h))
    nodule, consolidation = ds.class_names.index("nodule"), ds.class_names.index("consolidation")
    assert max(sides[nodule]) <= 11 and min(sides[nodule]) <= 7
    assert max(sides[consolidation]) >= 60
    for c, spec in enumerate(ds.findings):
        assert sides[c], f"no {spec.name} in 200 images"
        assert max(sides[c]) <= spec.max_size + 2


def test_configurable_findings_and_count():
    specs = (FindingSpec("dot", "disc", 3, 4, prevalence=1.0, max_count=3),)
    ds = SyntheticDataset(split="train", size=128, num_images=5, findings=specs)
    batch = ds.generate_batch(range(5))
    assert len(ds) == 5 and ds.class_names == ["dot"]
    assert batch["image"].shape == (5, 1, 128, 128)
    assert all(1 <= len(b) <= 3 for b in batch["boxes"])
    assert batch["labels"].eq(1).all()


def _dihedral(image: torch.Tensor) -> list[torch.Tensor]:
    views = []
    for flipped in (image, image.flip(-1)):
        for turns in range(4):
            views.append(torch.rot90(flipped, turns, dims=(-2, -1)))
    return views


def test_augmentation_moves_boxes_with_the_pixels():
    indices = list(range(24))
    plain = SyntheticDataset(split="train", augment=False, num_images=24).generate_batch(indices)
    aug = SyntheticDataset(split="train", augment=True, num_images=24).generate_batch(indices)
    used = set()
    for n in range(len(indices)):
        views = _dihedral(plain["image"][n, 0])
        matches = [k for k, v in enumerate(views) if torch.equal(v, aug["image"][n, 0])]
        assert matches, "augmented image is not a flip/rotation of the plain one"
        k = matches[0]
        used.add(k)
        for c in range(len(plain["labels"][n])):
            # carry each class's box mask through the same pixel transform
            moved = _dihedral(_box_mask(plain["boxes"][n], c))[k]
            assert torch.equal(moved, _box_mask(aug["boxes"][n], c))
    assert len(used) >= 4


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="split"):
        SyntheticDataset(split="training")
    with pytest.raises(ValueError, match="shape"):
        FindingSpec("x", "star", 3, 5)
    with pytest.raises(ValueError, match="min_size"):
        FindingSpec("x", "disc", 8, 5)
    with pytest.raises(ValueError, match="contrast"):
        FindingSpec("x", "disc", 3, 5, contrast=0.0)
    with pytest.raises(ValueError, match="num_images"):
        SyntheticDataset(num_images=0)
