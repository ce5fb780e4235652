"""The CPU execution policy: environment override and the stated bf16 tolerance."""

import pytest
import torch
import torch.nn.functional as F

from pylon.models import create_model
from pylon.models.speed import (
    BF16_PROB_TOLERANCE,
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


def _varied_images(n, seed):
    """Images differing in structure, contrast and brightness (white noise would give degenerate
    BatchNorm statistics that no trained model has)."""
    g = torch.Generator().manual_seed(seed)
    shape = F.interpolate(torch.randn(n, 1, 8, 8, generator=g), size=(256, 256), mode="bicubic")
    noise = 0.3 * torch.randn(n, 1, 256, 256, generator=g)
    return shape * 2 * torch.rand(n, 1, 1, 1, generator=g) + noise + torch.randn(n, 1, 1, 1, generator=g)


def test_bf16_channels_last_stays_within_the_stated_tolerance(monkeypatch):
    torch.manual_seed(0)
    model = create_model("pylon", encoder="resnet18", num_classes=4)
    for m in model.modules():  # cumulative BatchNorm statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    x = _varied_images(4, seed=0)
    with torch.no_grad():
        for seed in range(1, 4):
            model.train()(_varied_images(8, seed))
        reference = model.eval()(x)

    monkeypatch.setenv("PYLON_CPU_PRECISION", "bf16")
    run = prepare_for_cpu(model)
    assert model.encoder.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), run.autocast():
        out = model(run.prepare_input(x))
    assert out.logits.dtype == torch.bfloat16
    prob = (out.logits.float().sigmoid() - reference.logits.sigmoid()).abs().max().item()
    heat = (out.cam.float().sigmoid() - reference.cam.sigmoid()).abs().max().item()
    assert 0 < prob < BF16_PROB_TOLERANCE
    assert 0 < heat < BF16_PROB_TOLERANCE
