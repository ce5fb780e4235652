"""The CPU execution policy: environment override, what each path does to model and outputs.

The bf16 tolerance itself is measured on trained weights by bench/model.py (docs/models.md):
randomly initialised BatchNorm networks amplify rounding and would not test it fairly.
"""

import pytest
import torch

from pylon.models import create_model
from pylon.models.speed import CpuExecution, prepare_for_cpu, recommended_cpu_execution


def test_environment_override(monkeypatch):
    monkeypatch.setenv("PYLON_CPU_PRECISION", "fp32")
    assert recommended_cpu_execution() == CpuExecution(bf16=False, channels_last=False)
    monkeypatch.setenv("PYLON_CPU_PRECISION", "bf16")
    assert recommended_cpu_execution() == CpuExecution(bf16=True, channels_last=True)
    monkeypatch.setenv("PYLON_CPU_PRECISION", "fp16")
    with pytest.raises(ValueError, match="PYLON_CPU_PRECISION must be"):
        recommended_cpu_execution()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_paths_change_only_what_they_say(monkeypatch, precision):
    torch.manual_seed(0)
    model = create_model("cam", encoder="resnet18", num_classes=3).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        reference = model(x)

    monkeypatch.setenv("PYLON_CPU_PRECISION", precision)
    run = prepare_for_cpu(model)
    with torch.no_grad(), run.autocast():
        out = model(run.prepare_input(x))
    conv = model.encoder.conv1.weight
    assert conv.dtype == torch.float32  # autocast casts on the fly; weights stay float32
    if precision == "fp32":
        assert torch.equal(out.logits, reference.logits) and torch.equal(out.cam, reference.cam)
    else:
        assert conv.is_contiguous(memory_format=torch.channels_last)
        assert out.logits.dtype == out.cam.dtype == torch.bfloat16
        # bf16 keeps ~3 significant digits per op: close, but not equal
        diff = (out.cam.float() - reference.cam).abs().max()
        assert 0 < diff < 0.1 * reference.cam.abs().max()
