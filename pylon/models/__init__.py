"""Models: PYLON and the paper's baselines behind one registry (``create_model``)."""

from pylon.models.output import ModelOutput
from pylon.models.registry import create_model, list_models, register_model

__all__ = ["ModelOutput", "create_model", "list_models", "register_model"]
