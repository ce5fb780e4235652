"""Phase 1 of two-phase transfer: the reference only turns gradients off (BatchNorm statistics
keep updating); ``model.freeze_bn`` also fixes them."""

import pytest
import torch

from pylon.training.config import ModelConfig
from pylon.training.fit import build_model


@pytest.mark.parametrize("freeze_bn", [False, True])
def test_frozen_encoder_batchnorm_statistics(freeze_bn):
    config = ModelConfig(name="cam", encoder="resnet18", freeze="enc", freeze_bn=freeze_bn)
    model = build_model(config, num_classes=2, in_channels=1)
    model.train()  # what Lightning does at every epoch
    bn = model.encoder.bn1
    before = bn.running_mean.clone()
    model(torch.randn(2, 1, 64, 64) * 3 + 1)
    assert all(not p.requires_grad for p in model.encoder.parameters())
    changed = not torch.equal(before, bn.running_mean)
    assert changed is (not freeze_bn)
