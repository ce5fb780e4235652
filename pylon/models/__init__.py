"""Models: PYLON and the paper's baselines behind one registry (``create_model``)."""

from pylon.models.base import ClassMapModel
from pylon.models.freeze import freeze_encoder
from pylon.models.output import ModelOutput
from pylon.models.precision import prepare_for_cpu
from pylon.models.registry import (
    create_model,
    create_model_from_config,
    list_models,
    model_options,
    register_model,
)
from pylon.models.state_dict import LoadReport
from pylon.models.weights import load_model, load_weights, read_weights_metadata, save_weights

__all__ = [
    "ClassMapModel",
    "LoadReport",
    "ModelOutput",
    "create_model",
    "create_model_from_config",
    "freeze_encoder",
    "list_models",
    "load_model",
    "load_weights",
    "model_options",
    "prepare_for_cpu",
    "read_weights_metadata",
    "register_model",
    "save_weights",
]
