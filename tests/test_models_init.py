"""Initialisation as the reference gets it: smp ``initialize()`` for PYLON and the smp baselines
(decoder convs Kaiming-uniform fan-in ReLU with zero bias, norms 1/0, head Xavier-uniform with
zero bias); PyTorch's defaults for the CAM and Li 2018 heads and DeepLabV3+ (smp's DeepLabV3Plus
does not call ``initialize()``, in the reference's smp version as in ours)."""

import math

import pytest
import torch
from torch import nn

from pylon.models import create_model

SMP_INIT = [
    ("pylon", {}),
    ("fpn", {"norm": "batchnorm"}),
    ("fpn", {"norm": "groupnorm"}),
    ("unet", {}),
    ("pan", {"gap": True}),
    ("pan", {"gap": False}),
]


def _fan_in(conv: nn.Conv2d) -> int:
    return conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]


def _check_uniform(weight: torch.Tensor, bound: float, name: str) -> None:
    """Within [-bound, bound], and (for enough samples) with the std of U(-bound, bound)."""
    assert weight.abs().max() <= bound * (1 + 1e-6), name
    if weight.numel() >= 2000:
        assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1), name


def _convs(module: nn.Module):
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize(("name", "options"), SMP_INIT, ids=lambda v: str(v))
def test_smp_initialize_of_decoder_and_head(name, options):
    torch.manual_seed(0)
    model = create_model(name, encoder="resnet18", num_classes=5, **options)
    decoder, head = model.net.decoder, model.net.segmentation_head
    convs = _convs(decoder)
    assert convs
    for conv_name, conv in convs:
        _check_uniform(conv.weight, math.sqrt(6 / _fan_in(conv)), conv_name)  # kaiming, ReLU gain
        assert conv.bias is None or torch.count_nonzero(conv.bias) == 0, conv_name
    for norm_name, norm in decoder.named_modules():
        if isinstance(norm, nn.BatchNorm2d | nn.GroupNorm):
            assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0), norm_name
    conv = model.class_head
    assert any(m is conv for m in head.modules())
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    _check_uniform(conv.weight, math.sqrt(6 / (_fan_in(conv) + fan_out)), "head")  # xavier
    assert torch.count_nonzero(conv.bias) == 0


def test_pylon_decoder_is_no_longer_pytorch_default():
    """The statistics above tell the two inits apart: PyTorch's default conv init has bound
    1/sqrt(fan_in), i.e. a std sqrt(6) times smaller than Kaiming's, and a non-zero bias."""
    torch.manual_seed(0)
    conv = nn.Conv2d(512, 512, 1)
    with pytest.raises(AssertionError):
        _check_uniform(conv.weight, math.sqrt(6 / 512), "default")
    assert torch.count_nonzero(conv.bias) > 0


@pytest.mark.parametrize(
    ("name", "options", "part"),
    [
        ("cam", {}, lambda m: m.classifier),
        ("cam", {"pool": "avg"}, lambda m: m.classifier),
        ("li2018", {}, lambda m: m.head),
        ("deeplabv3plus", {"aspp_pooling": True}, lambda m: m.net.decoder),
        ("deeplabv3plus", {"aspp_pooling": False}, lambda m: m.net.decoder),
        ("deeplabv3plus", {"aspp_pooling": False}, lambda m: m.net.segmentation_head),
    ],
)
def test_pytorch_default_init_where_the_reference_keeps_it(name, options, part):
    torch.manual_seed(0)
    module = part(create_model(name, encoder="resnet18", num_classes=5, **options))
    for conv_name, conv in _convs(module) or [("self", module)]:
        bound = 1 / math.sqrt(_fan_in(conv))  # kaiming_uniform(a=sqrt(5)) and the bias init
        _check_uniform(conv.weight, bound, conv_name)
        if conv.bias is not None:
            assert conv.bias.abs().max() <= bound and torch.count_nonzero(conv.bias) > 0
