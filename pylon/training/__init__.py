"""Training on Lightning: typed configs, run folders with resume, checkpoints and presets."""

from pylon.training.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    parse_override,
)
from pylon.training.fit import train
from pylon.training.presets import get_preset, list_presets
from pylon.training.runs import RunPaths

__all__ = [
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "RunPaths",
    "TrainConfig",
    "apply_overrides",
    "get_preset",
    "list_presets",
    "parse_override",
    "train",
]
