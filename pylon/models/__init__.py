"""Models: PYLON and the paper's baselines behind one registry (``create_model``)."""

from pylon.models.output import ModelOutput
from pylon.models.precision import prepare_for_cpu
from pylon.models.registry import (
    create_model,
    create_model_from_config,
    list_models,
    model_options,
    register_model,
)
from pylon.models.weights import LoadReport, load_model, read_weights_metadata

__all__ = [
    "LoadReport",
    "ModelOutput",
    "create_model",
    "create_model_from_config",
    "list_models",
    "load_model",
    "model_options",
    "prepare_for_cpu",
    "read_weights_metadata",
    "register_model",
]
