"""Training on Lightning: typed configs, run folders with resume, evaluation, presets and sweeps."""

from pylon.training.config import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    parse_override,
)
from pylon.training.evaluate import evaluate_run, summarize_experiment
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
    "evaluate_run",
    "get_preset",
    "list_presets",
    "parse_override",
    "summarize_experiment",
    "train",
]
