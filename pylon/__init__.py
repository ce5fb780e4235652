"""pylon: weakly supervised, high-resolution localization with the Pyramid Localization Network."""

from pylon.inference import Predictor
from pylon.models import ModelOutput, create_model, list_models
from pylon.models.weights import freeze_encoder, load_weights, save_weights

__version__ = "0.1.0"

__all__ = [
    "ModelOutput",
    "Predictor",
    "__version__",
    "create_model",
    "freeze_encoder",
    "list_models",
    "load_weights",
    "save_weights",
]
