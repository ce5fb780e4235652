"""The brightness model of the prediction tests: its class map is a known function of the input,
so where it peaks (on the brightest region) and its probabilities are known by construction.

Importing this module registers the model as ``_test_brightness_cam``; a test that runs pylon in
a fresh interpreter imports it there too (this folder on ``sys.path``).
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pylon import create_model, save_weights
from pylon.models import ModelOutput, register_model

NAME = "_test_brightness_cam"


@register_model(NAME)
class BrightnessCam(nn.Module):
    """CAM = 1x1 conv (weight 1 / in_channels, bias 0) of the 4x4 average-pooled input: it peaks
    where the image is brightest."""

    def __init__(self, encoder="none", in_channels=1, num_classes=2, encoder_weights=None):
        super().__init__()
        self.head = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.constant_(self.head.weight, 1.0 / in_channels)
        nn.init.zeros_(self.head.bias)

    def forward(self, x):
        cam = self.head(F.avg_pool2d(x, 4))
        return ModelOutput(cam.amax(dim=(2, 3)), cam)


def brightness_weights(path, class_names, size, *, weight=None, bias=None, mean=0.5, std=0.25):
    """Save a one-channel :class:`BrightnessCam` with its preprocessing record.

    Args:
        path: the ``.safetensors`` file to write.
        class_names: one per class.
        size: the input size of the record.
        weight, bias: per class, class ``c``'s map is ``weight[c] * pooled + bias[c]`` (default
            1 and 0: every class is the brightness itself).
        mean, std: the normalisation of the record.

    Returns:
        ``path``.
    """
    model = create_model(NAME, num_classes=len(class_names))
    with torch.no_grad():
        if weight is not None:
            model.head.weight.copy_(torch.tensor(weight, dtype=torch.float32).view(-1, 1, 1, 1))
        if bias is not None:
            model.head.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    data = {
        "class_names": list(class_names),
        "size": size,
        "in_channels": 1,
        "mean": [mean],
        "std": [std],
    }
    save_weights(model, path, metadata={"pylon_data": data})
    return Path(path)
