"""The model contract, for every registered model (read from the registry, so a newly registered
model is tested too), and the paper's variants: output shapes, input rules, pooling, gradients."""

import math

import pytest
import torch
from torch import nn

from pylon.models import ClassMapModel, ModelOutput, create_model, list_models
from pylon.models.registry import create_model_from_config

# names starting with "_" are other test modules' doubles, not models
MODELS = [name for name in list_models() if not name.startswith("_")]

# the paper's variants and the CAM size each gives, as a function of the input size
VARIANTS = [
    ("pylon", {}, lambda h, w: (h // 4, w // 4)),
    ("cam", {"pool": "max"}, lambda h, w: (h // 32, w // 32)),
    ("cam", {"pool": "avg"}, lambda h, w: (h // 32, w // 32)),
    ("li2018", {}, lambda h, w: (20, 20)),
    ("li2018", {"pool": "max"}, lambda h, w: (20, 20)),
    ("fpn", {"norm": "groupnorm"}, lambda h, w: (h // 4, w // 4)),
    ("fpn", {"norm": "batchnorm"}, lambda h, w: (h // 4, w // 4)),
    ("unet", {}, lambda h, w: (h, w)),
    ("deeplabv3plus", {"aspp_pooling": True}, lambda h, w: (h // 4, w // 4)),
    ("deeplabv3plus", {"aspp_pooling": False}, lambda h, w: (h // 4, w // 4)),
    ("pan", {"gap": True}, lambda h, w: (h // 4, w // 4)),
    ("pan", {"gap": False}, lambda h, w: (h // 4, w // 4)),
    ("pan", {"output_stride": 16}, lambda h, w: (h // 4, w // 4)),
]
IDS = [f"{name}-{'-'.join(map(str, opts.values())) or 'default'}" for name, opts, _ in VARIANTS]


def _mil_reference(cam: torch.Tensor) -> torch.Tensor:
    """Li et al. 2018 pooling written from the formula, in float64, one class map at a time."""
    out = torch.empty(cam.shape[:2], dtype=torch.float64)
    for n in range(cam.shape[0]):
        for c in range(cam.shape[1]):
            prod = 1.0
            for s in cam[n, c].flatten().tolist():
                prod *= (1 - 0.98) * (1 - 1 / (1 + math.exp(-s))) + 0.98
            p = 1 - prod
            out[n, c] = math.log(p / (1 - p))
    return out


def _reference_logits(pool: str, cam: torch.Tensor) -> torch.Tensor:
    if pool == "mil":
        return _mil_reference(cam.double())
    if pool == "avg":
        return cam.double().sum(dim=(2, 3)) / (cam.shape[2] * cam.shape[3])
    assert pool == "max"
    ref = torch.full(cam.shape[:2], -math.inf, dtype=torch.float64)
    for i in range(cam.shape[2]):  # a plain loop over positions
        for j in range(cam.shape[3]):
            ref = torch.maximum(ref, cam[:, :, i, j].double())
    return ref


def test_list_models():
    names = list_models()
    assert names == sorted(names)
    assert set(MODELS) == {"pylon", "cam", "li2018", "fpn", "unet", "deeplabv3plus", "pan"}


@pytest.mark.parametrize("name", MODELS)
def test_every_model_declares_the_contract(name):
    model = create_model(name, encoder="resnet18", in_channels=1, num_classes=3)
    assert isinstance(model, ClassMapModel)
    assert isinstance(model.encoder, nn.Module) and hasattr(model.encoder, "out_channels")
    assert isinstance(model.class_head, nn.Conv2d) and model.class_head.out_channels == 3
    assert model.in_channels == 1
    assert model.min_size >= 32 and model.min_size % 32 == 0
    assert model.pool in ("max", "avg", "mil")


@pytest.mark.parametrize("name", MODELS)
def test_every_model_pools_its_map_and_trains_its_encoder(name):
    torch.manual_seed(0)
    model = create_model(name, encoder="resnet18", in_channels=1, num_classes=3).train()
    size = model.min_size if model.min_size >= 128 else 64
    out = model(torch.randn(2, 1, size, size + 32))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 3) and out.cam.shape[:2] == (2, 3)
    expected = _reference_logits(model.pool, out.cam.detach())
    torch.testing.assert_close(out.logits.detach().double(), expected, rtol=1e-4, atol=1e-4)

    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    nn.functional.binary_cross_entropy_with_logits(out.logits, targets).backward()
    first_conv = model.encoder.conv1.weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    assert model.class_head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", MODELS)
def test_every_model_states_its_input_rules(name):
    model = create_model(name, encoder="resnet18", in_channels=1, num_classes=2).eval()
    size = model.min_size
    with pytest.raises(ValueError, match=r"expected 1 input channel\(s\), got 3"):
        model(torch.zeros(1, 3, size, size))
    with pytest.raises(ValueError, match="4-D input"):
        model(torch.zeros(1, size, size))
    rule = f"multiples of 32 and at least {size}"
    for bad in [(size, size + 16), (size - 32, size)] if size > 32 else [(size, size + 16)]:
        with pytest.raises(ValueError, match=f"{rule}, got {bad[0]}x{bad[1]}"):
            model(torch.zeros(1, 1, *bad))


@pytest.mark.parametrize("name", MODELS)
def test_batchnorm_1x1_rule(name):
    """A training batch whose batch-normalised map has a single value per channel is refused with
    a clear message (torch would raise deep inside BatchNorm); two images are enough."""
    torch.manual_seed(0)
    model = create_model(name, encoder="resnet18", num_classes=2).train()
    size = model.min_size if model.min_size >= 128 else 64
    single = torch.randn(1, 1, size, size)
    if model.batchnorm_1x1 is None:
        model(single)
    else:
        with pytest.raises(ValueError, match="batch of at least 2"):
            model(single)
        # the rule is real: without the check torch fails deep inside BatchNorm
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            model.class_map(single)
    model(torch.randn(2, 1, size, size))
    model.eval()(single)


@pytest.mark.parametrize(("name", "options", "cam_size"), VARIANTS, ids=IDS)
def test_variant_cam_sizes_at_square_and_non_square_sizes(name, options, cam_size):
    torch.manual_seed(0)
    model = create_model(name, encoder="resnet18", in_channels=1, num_classes=5, **options).eval()
    with torch.no_grad():
        for h, w in [(256, 256), (288, 352)]:
            out = model(torch.randn(1, 1, h, w))
            assert out.logits.shape == (1, 5)
            assert out.cam.shape == (1, 5, *cam_size(h, w))


def test_three_channel_input():
    model = create_model("pylon", encoder="resnet18", in_channels=3, num_classes=2).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 256, 320))
    assert out.cam.shape == (1, 2, 64, 80)


def test_mil_pooling_extremes_stay_finite():
    from pylon.models.pooling import mil_logit

    cam = torch.tensor([[[[-200.0, -150.0], [-120.0, -300.0]]], [[[50.0, 40.0], [60.0, 45.0]]]])
    logits = mil_logit(cam)
    assert torch.isfinite(logits).all()
    # all patches certain: p = 1 - 0.98**4, so the logit is log(p / (1 - p))
    p = 1 - 0.98**4
    assert logits[1, 0].item() == pytest.approx(math.log(p / (1 - p)), rel=1e-5)
    assert logits[0, 0].item() < -80


def test_config_rebuilds_the_same_architecture():
    model = create_model("fpn", encoder="resnet18", num_classes=4, norm="groupnorm")
    assert model.pylon_config["options"] == {"norm": "groupnorm", "dropout": 0.0}
    rebuilt = create_model_from_config(model.pylon_config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert any(isinstance(m, nn.GroupNorm) for m in rebuilt.modules())


def test_unknown_model_and_option_list_valid_choices():
    with pytest.raises(ValueError, match="available: .*pylon"):
        create_model("resnet-cam")
    with pytest.raises(ValueError, match=r"unknown option.*'pooling'.*pool='max'"):
        create_model("cam", encoder="resnet18", pooling="avg")
    with pytest.raises(ValueError, match="pool must be one of"):
        create_model("cam", encoder="resnet18", pool="sum")
    with pytest.raises(ValueError, match="output_stride must be one of"):
        create_model("pan", encoder="resnet18", output_stride=8)
    with pytest.raises(ValueError, match="resnet1000"):
        create_model("pylon", encoder="resnet1000")


def test_registry_has_one_way_to_register():
    from pylon.models import register_model

    with pytest.raises(TypeError, match=r'register_model\("name"\)'):
        register_model(lambda encoder, in_channels, num_classes, encoder_weights: None)
    with pytest.raises(TypeError, match=r"must accept \['encoder'\]"):
        register_model("_bad")(lambda encoder_name, in_channels, num_classes, encoder_weights: 0)
    assert "_bad" not in list_models()


def test_pylon_single_image_training_message_names_the_block():
    model = create_model("pylon", encoder="resnet18").train()
    with pytest.raises(ValueError, match="below 512 px: its pyramid attention block"):
        model(torch.zeros(1, 1, 256, 256))
    model(torch.zeros(1, 1, 512, 512))  # two cells per channel: trains
