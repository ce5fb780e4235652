"""How evaluation runs a trained model: the training fast path (the one precision policy,
channels_last) on the device asked for, with Lightning's notices quieted as in training."""

from __future__ import annotations

import torch
from torch import nn

from pylon.models.precision import Execution, resolve_execution
from pylon.models.weights import load_model
from pylon.training.config import TrainConfig
from pylon.training.fit import quiet_lightning_notices, resolve_precision
from pylon.training.runs import RunPaths


def run_execution(config: TrainConfig, device: str | torch.device | None = None) -> Execution:
    """The run's precision and memory format for evaluation.

    Args:
        config: the run's config (``precision``, ``model.channels_last``, ``accelerator``).
        device: where to evaluate; ``None``: where training runs (:func:`resolve_precision`).

    Returns:
        The :class:`~pylon.models.precision.Execution`. A run trained in fp16 (CUDA only) that is
        evaluated on the CPU gets the CPU's ``auto`` choice (bf16 or fp32) instead of an error.
    """
    if device is None:
        return resolve_precision(config)
    precision = config.precision
    if precision == "fp16" and torch.device(device).type == "cpu":
        precision = "auto"
    return resolve_execution(precision, device, channels_last=config.model.channels_last)


def load_run_model(
    paths: RunPaths, config: TrainConfig, device: str | torch.device | None = None
) -> tuple[nn.Module, Execution, torch.device]:
    """Load a run's best weights for inference on the evaluation fast path.

    Args:
        paths: the run's paths (``paths.best`` is read).
        config: the run's config.
        device: where to run; ``None``: where training runs (CUDA when the run would use it).

    Returns:
        ``(model, execution, device)``: the model in eval mode, on ``device`` and in the
        execution's memory format; use ``execution.autocast()`` and ``execution.prepare_input``.
    """
    quiet_lightning_notices()
    execution = run_execution(config, device)
    target = torch.device(device if device is not None else execution.device_type)
    model = load_model(paths.best).eval().to(target)
    execution.prepare_model(model)
    return model, execution, target
