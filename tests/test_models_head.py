"""Prior init of the class-map head: every model's ``class_head`` really outputs its CAM, and
after ``init_head_prior`` a fresh model scores every location at about the prior."""

import math

import pytest
import torch
from torch import nn

from pylon.models import create_model, list_models
from pylon.models.head_prior import class_head, init_head_prior
from pylon.training.config import ModelConfig, TrainConfig
from pylon.training.fit import build_model

MODELS = [name for name in list_models() if not name.startswith("_")]  # "_": test doubles


@pytest.mark.parametrize("name", MODELS)
def test_prior_init_starts_every_location_at_the_prior(name):
    torch.manual_seed(0)
    model = create_model(name, encoder="resnet18", num_classes=3).eval()
    size = max(model.min_size, 64)
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        before = model(x).cam
        class_head(model).bias.add_(1.5)
        shifted = model(x).cam
    # the class head is the layer that outputs the map: its bias shifts the whole map
    torch.testing.assert_close(shifted - before, torch.full_like(before, 1.5), atol=1e-4, rtol=0)

    init_head_prior(model, prior=0.01)
    with torch.no_grad():
        # as in training: batch statistics keep the features at unit scale (a random encoder's
        # eval-mode features are not)
        cam = model.train()(x).cam
    assert class_head(model).bias.tolist() == pytest.approx([-math.log(99)] * 3)
    # within a factor of about 4 of the prior everywhere (the default init spans ~0.2..0.8)
    assert (cam + math.log(99)).abs().max() < 1.5, (cam.min(), cam.max())


def test_invalid_prior_and_models_without_a_head_are_clear_errors():
    model = create_model("cam", encoder="resnet18", num_classes=2)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="probability"):
            init_head_prior(model, prior=bad)
    with pytest.raises(ValueError, match="class_head"):
        init_head_prior(nn.Sequential(nn.Conv2d(1, 2, 1)))


def test_training_config_applies_and_validates_head_prior():
    config = ModelConfig(name="cam", encoder="resnet18", head_prior=0.05)
    model = build_model(config, num_classes=2, in_channels=1)
    assert class_head(model).bias.tolist() == pytest.approx([-math.log(19)] * 2)
    default = build_model(ModelConfig(name="cam", encoder="resnet18"), num_classes=2, in_channels=1)
    assert class_head(default).bias.abs().max() < 0.1  # the model's own init, untouched
    with pytest.raises(ValueError, match="head_prior"):
        TrainConfig(model=ModelConfig(head_prior=1.5)).validate()
