"""Every model and variant: output shapes, gradients to the encoder, and pooling of the CAM."""

import math

import pytest
import torch

from pylon.models import ModelOutput, create_model, list_models
from pylon.models.registry import create_model_from_config

# (name, options, CAM size as a function of the input size)
VARIANTS = [
    ("pylon", {}, lambda h, w: (h // 4, w // 4)),
    ("cam", {"pool": "max"}, lambda h, w: (h // 32, w // 32)),
    ("cam", {"pool": "avg"}, lambda h, w: (h // 32, w // 32)),
    ("li2018", {}, lambda h, w: (20, 20)),
    ("fpn", {"norm": "groupnorm"}, lambda h, w: (h // 4, w // 4)),
    ("fpn", {"norm": "batchnorm"}, lambda h, w: (h // 4, w // 4)),
    ("unet", {}, lambda h, w: (h, w)),
    ("deeplabv3plus", {"aspp_pooling": True}, lambda h, w: (h // 4, w // 4)),
    ("deeplabv3plus", {"aspp_pooling": False}, lambda h, w: (h // 4, w // 4)),
    ("pan", {"gap": True}, lambda h, w: (h // 4, w // 4)),
    ("pan", {"gap": False}, lambda h, w: (h // 4, w // 4)),
]
# smallest input each model accepts, to keep the backward passes cheap
MIN_SIZE = {"pylon": 256, "pan": 128}
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


def _reference_logits(name: str, options: dict, cam: torch.Tensor) -> torch.Tensor:
    if name == "li2018":
        return _mil_reference(cam.double())
    if options.get("pool") == "avg":
        return cam.double().mean(dim=(2, 3))
    # global max pooling, by a plain loop over positions
    ref = torch.full(cam.shape[:2], -math.inf, dtype=torch.float64)
    for i in range(cam.shape[2]):
        for j in range(cam.shape[3]):
            ref = torch.maximum(ref, cam[:, :, i, j].double())
    return ref


def test_list_models():
    # other test modules register their own tiny models (users may too): only those start with "_"
    expected = {"pylon", "cam", "li2018", "fpn", "unet", "deeplabv3plus", "pan"}
    names = list_models()
    assert names == sorted(names)
    assert {name for name in names if not name.startswith("_")} == expected


@pytest.mark.parametrize(("name", "options", "cam_size"), VARIANTS, ids=IDS)
def test_shapes_at_square_and_non_square_sizes(name, options, cam_size):
    torch.manual_seed(0)
    model = create_model(name, encoder="resnet18", in_channels=1, num_classes=5, **options).eval()
    with torch.no_grad():
        for h, w in [(256, 256), (288, 352)]:
            out = model(torch.randn(1, 1, h, w))
            assert isinstance(out, ModelOutput)
            assert out.logits.shape == (1, 5)
            assert out.cam.shape == (1, 5, *cam_size(h, w))


@pytest.mark.parametrize(("name", "options", "cam_size"), VARIANTS, ids=IDS)
def test_gradients_reach_encoder_and_logits_pool_the_cam(name, options, cam_size):
    torch.manual_seed(0)
    model = create_model(name, encoder="resnet18", in_channels=1, num_classes=3, **options).train()
    size = MIN_SIZE.get(name, 64)
    out = model(torch.randn(2, 1, size, size))
    expected = _reference_logits(name, options, out.cam.detach())
    torch.testing.assert_close(out.logits.detach().double(), expected, rtol=1e-4, atol=1e-4)

    torch.nn.functional.binary_cross_entropy_with_logits(
        out.logits, torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    ).backward()
    first_conv = model.encoder.conv1.weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


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
    model = create_model("fpn", encoder="resnet18", num_classes=4, norm="batchnorm")
    assert model.pylon_config["options"] == {"norm": "batchnorm"}
    rebuilt = create_model_from_config(model.pylon_config)
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}


def test_unknown_model_and_option_list_valid_choices():
    with pytest.raises(ValueError, match="available: .*pylon"):
        create_model("resnet-cam")
    with pytest.raises(ValueError, match=r"unknown option.*'pooling'.*pool='max'"):
        create_model("cam", encoder="resnet18", pooling="avg")
    with pytest.raises(ValueError, match="pool must be one of"):
        create_model("cam", encoder="resnet18", pool="sum")
    with pytest.raises(ValueError, match="resnet1000"):
        create_model("pylon", encoder="resnet1000")


@pytest.mark.parametrize("name", ["pylon", "cam", "li2018", "fpn", "unet", "deeplabv3plus", "pan"])
def test_wrong_channel_count_is_a_clear_error(name):
    model = create_model(name, encoder="resnet18", in_channels=1, num_classes=2).eval()
    with pytest.raises(ValueError, match=r"expected 1 input channel\(s\), got 3"):
        model(torch.zeros(1, 3, 256, 256))
    with pytest.raises(ValueError, match="4-D input"):
        model(torch.zeros(1, 256, 256))


@pytest.mark.parametrize("size", [(250, 256), (256, 300), (224, 224), (128, 512)])
def test_pylon_rejects_bad_sizes_stating_the_rule(size):
    model = create_model("pylon", encoder="resnet18").eval()
    rule = "multiples of 32 and at least 256"
    with pytest.raises(ValueError, match=f"{rule}, got {size[0]}x{size[1]}"):
        model(torch.zeros(1, 1, *size))


def test_baselines_reject_non_multiples_of_32():
    model = create_model("cam", encoder="resnet18").eval()
    with pytest.raises(ValueError, match="multiples of 32.*got 100x96"):
        model(torch.zeros(1, 1, 100, 96))


def test_pylon_single_image_training_batch_is_a_clear_error():
    model = create_model("pylon", encoder="resnet18").train()
    with pytest.raises(ValueError, match="batch of at least 2"):
        model(torch.zeros(1, 1, 256, 256))
