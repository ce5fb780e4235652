"""The CPU execution policy: environment override and the stated bf16 tolerance."""

import pytest
import torch

from pylon.models import create_model
from pylon.models.speed import (
    BF16_ABS_TOLERANCE,
    CpuExecution,
    prepare_for_cpu,
    recommended_cpu_execution,
)


def test_environment_override(monkeypatch):
    monkeypatch.setenv("PYLON_CPU_PRECISION", "fp32")
    assert recommended_cpu_execution() == CpuExecution(bf16=False, channels_last=False)
    monkeypatch.setenv("PYLON_CPU_PRECISION", "bf16")
    assert recommended_cpu_execution() == CpuExecution(bf16=True, channels_last=True)
    monkeypatch.setenv("PYLON_CPU_PRECISION", "fp16")
    with pytest.raises(ValueError, match="PYLON_CPU_PRECISION must be"):
        recommended_cpu_execution()


def test_bf16_channels_last_stays_within_the_stated_tolerance(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 256, 256)
    model = create_model("pylon", encoder="resnet18", num_classes=4)
    for m in model.modules():  # BatchNorm statistics of real activations, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model.train()(x)
        reference = model.eval()(x)

    monkeypatch.setenv("PYLON_CPU_PRECISION", "bf16")
    run = prepare_for_cpu(model)
    assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), run.autocast():
        out = model(run.prepare_input(x))
    assert out.logits.dtype == torch.bfloat16
    diff = (out.logits.float() - reference.logits).abs().max().item()
    assert 0 < diff < BF16_ABS_TOLERANCE
    heat = (out.cam.float().sigmoid() - reference.cam.sigmoid()).abs().max().item()
    assert heat < BF16_ABS_TOLERANCE
