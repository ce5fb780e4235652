"""Encoder weights: local files (3-channel weights adapted to 1 channel) and offline failures."""

import huggingface_hub.constants
import pytest
import torch
from safetensors.torch import save_file
from segmentation_models_pytorch.encoders import get_encoder

from pylon.models import create_model
from pylon.models.encoder import EncoderWeightsUnavailable


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_three_channel_encoder_file_initialises_a_one_channel_model(tmp_path, suffix):
    torch.manual_seed(3)
    rgb = get_encoder("resnet18", in_channels=3, weights=None)
    state = {k: v.clone() for k, v in rgb.state_dict().items()}
    state["fc.weight"] = torch.zeros(10, 512)  # classifier tensors in the file are ignored
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))

    model = create_model("cam", encoder="resnet18", in_channels=1, encoder_weights=str(path))
    enc = model.encoder.state_dict()
    # a grey image is R = G = B, so the 1-channel kernel is the sum over RGB kernels
    torch.testing.assert_close(enc["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))
    for k in ("layer1.0.conv1.weight", "layer4.1.bn2.running_var", "bn1.bias"):
        assert torch.equal(enc[k], state[k]), k


def test_local_file_for_another_encoder_is_refused(tmp_path):
    path = tmp_path / "r34.safetensors"
    save_file(get_encoder("resnet34", weights=None).state_dict(), str(path))
    with pytest.raises(
        ValueError, match=r"r34\.safetensors: not a state dict of encoder 'resnet18'"
    ):
        create_model("pylon", encoder="resnet18", encoder_weights=path.as_posix())


def test_imagenet_offline_fails_fast_with_advice(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(EncoderWeightsUnavailable) as info:
        create_model("pylon", encoder="resnet18", encoder_weights="imagenet")
    message = str(info.value)
    assert "'resnet18'" in message
    assert "encoder_weights=None" in message and "local" in message


def test_unknown_pretrained_weights_name():
    with pytest.raises(ValueError, match=r"'instagram-9000'.*has no such.*imagenet, ssl, swsl"):
        create_model("pylon", encoder="resnet18", encoder_weights="instagram-9000")
