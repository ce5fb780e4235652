"""TensorBoard images during training: a tiny run writes one overlay per fixed validation case and
epoch (read back from the event file with TensorBoard's own reader), the cases are the first
validation images with boxes, boxes drawn where the dataset puts them; switched off, none."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pylon.data import create_dataset
from pylon.training.config import ConfigError, TrainConfig, apply_overrides
from pylon.training.fit import train
from pylon.training.image_logging import case_tag, pick_cases

TINY = {
    "max_epochs": 2,
    "progress": False,
    "precision": "fp32",
    "model.name": "cam",
    "model.encoder": "resnet18",
    "data.size": 64,
    "data.batch_size": 2,
    "data.num_workers": 0,
    "data.split_options": {
        "train": {"num_images": 2},
        "val": {"num_images": 6},
        "test": {"num_images": 2},
    },
    "log_images_count": 2,
}


def events(run_dir) -> EventAccumulator:
    (folder,) = (run_dir / "logs" / "tensorboard").glob("version_*")
    accumulator = EventAccumulator(str(folder), size_guidance={"images": 0})
    accumulator.Reload()
    return accumulator


def test_validation_overlays_are_logged_once_per_epoch(tmp_path):
    torch.set_num_threads(2)
    config = apply_overrides(TrainConfig(), {**TINY, "experiment": "images"})
    run_dir = train(config, runs_dir=tmp_path)
    accumulator = events(run_dir)
    val = create_dataset("synthetic", None, "val", size=64, num_images=6)
    boxed = [val[i] for i in range(6) if val[i]["boxes"]][:2]
    assert len(boxed) == 2  # the test needs two images with boxes
    names = val.class_names
    want = [case_tag(k, names[int(s["boxes"][0][4])], s["image_id"]) for k, s in enumerate(boxed)]
    assert sorted(accumulator.Tags()["images"]) == sorted(want)
    for tag, sample in zip(want, boxed, strict=True):
        images = accumulator.Images(tag)
        assert [e.step for e in images] == [0, 1]  # one per validation epoch
        c = int(sample["boxes"][0][4])
        for event in images:
            assert (event.width, event.height) == (64, 64)
            rgb = cv2.cvtColor(
                cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), 1),
                cv2.COLOR_BGR2RGB,
            )
            assert rgb.shape == (64, 64, 3)
            for x, y, w, h, k in sample["boxes"]:
                if int(k) == c:  # the class's boxes in green at their input pixels
                    x0, y0 = round(x), round(y)
                    x1, y1 = round(x + w), min(round(y + h), 63)
                    assert tuple(rgb[y0, (x0 + x1) // 2]) == (0, 255, 0)
                    assert tuple(rgb[y1, (x0 + x1) // 2]) == (0, 255, 0)


def test_switched_off_no_images_and_counts_are_checked(tmp_path):
    torch.set_num_threads(2)
    overrides = {**TINY, "experiment": "quiet", "max_epochs": 1, "log_images": False}
    run_dir = train(apply_overrides(TrainConfig(), overrides), runs_dir=tmp_path)
    accumulator = events(run_dir)
    assert accumulator.Tags()["images"] == []
    assert accumulator.Tags()["scalars"]  # the losses are still logged
    with pytest.raises(ConfigError, match=r"^log_images_count=0; expected an integer in \[1, 64\]"):
        apply_overrides(TrainConfig(), {"log_images_count": 0})
    with pytest.raises(ConfigError, match="log_images must be true or false"):
        apply_overrides(TrainConfig(), {"log_images": "yes"})


def test_cases_fall_back_to_labels_where_no_image_has_a_box():
    class Labels:
        """Four images without boxes, the second and fourth with a positive label."""

        def __len__(self):
            return 4

        def __getitem__(self, i):
            labels = np.zeros(3)
            if i % 2:
                labels[i % 3] = 1
            return {"boxes": [], "labels": labels}

    assert pick_cases(Labels(), 4) == [(1, 1), (3, 0)]
    val = create_dataset("synthetic", None, "val", size=64, num_images=6)
    boxed = [(i, int(val[i]["boxes"][0][4])) for i in range(6) if val[i]["boxes"]]
    assert pick_cases(val, 3) == boxed[:3]
