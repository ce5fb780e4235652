"""The precision policy: one vocabulary, what each path does to model and outputs.

The bf16 tolerance itself is measured on trained weights by bench/model.py (docs/models.md):
randomly initialised BatchNorm networks amplify rounding and would not test it fairly.
"""

import pytest
import torch

from pylon.models import create_model
from pylon.models.precision import (
    PRECISIONS,
    cpu_has_native_bf16,
    normalize_precision,
    resolve_execution,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("32", "fp32"), ("16-mixed", "fp16"), ("BF16", "bf16"), ("auto", "auto"), ("fp32", "fp32")],
)
def test_aliases_map_onto_the_vocabulary(given, expected):
    assert normalize_precision(given) == expected
    assert expected in PRECISIONS


def test_unknown_precision_names_the_field():
    with pytest.raises(ValueError, match=r"eval\.precision='half'; expected one of auto"):
        normalize_precision("half", field="eval.precision")


def test_auto_per_device():
    cpu = resolve_execution("auto", "cpu")
    assert cpu.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert cpu.channels_last == cpu.mixed
    gpu = resolve_execution("auto", "cuda")  # the decision needs no GPU present
    assert (gpu.precision, gpu.lightning_precision, gpu.dtype) == (
        "fp16",
        "16-mixed",
        torch.float16,
    )
    assert resolve_execution("bf16", "gpu").device_type == "cuda"
    assert resolve_execution("bf16", "cpu", channels_last=False).channels_last is False
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_execution("fp16", "cpu")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_paths_change_only_what_they_say(precision):
    torch.manual_seed(0)
    model = create_model("cam", encoder="resnet18", num_classes=3).eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        reference = model(x)

    run = resolve_execution(precision, "cpu")
    run.prepare_model(model)
    with torch.no_grad(), run.autocast():
        out = model(run.prepare_input(x))
    conv = model.encoder.conv1.weight
    assert conv.dtype == torch.float32  # autocast casts on the fly; weights stay float32
    if precision == "fp32":
        assert torch.equal(out.logits, reference.logits) and torch.equal(out.cam, reference.cam)
    else:
        assert conv.is_contiguous(memory_format=torch.channels_last)
        # computed in bf16, then cast to float32 before pooling, as the reference does
        assert out.logits.dtype == out.cam.dtype == torch.float32
        assert torch.equal(out.cam, out.cam.bfloat16().float())
        # bf16 keeps ~3 significant digits per op: close, but not equal
        diff = (out.cam.float() - reference.cam).abs().max()
        assert 0 < diff < 0.1 * reference.cam.abs().max()
