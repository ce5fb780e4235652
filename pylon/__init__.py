"""pylon: weakly supervised, high-resolution localization with the Pyramid Localization Network."""

from pylon.models import ModelOutput, create_model, list_models
from pylon.models.freeze import freeze_encoder
from pylon.models.weights import load_weights, save_weights

__version__ = "0.1.0"


def __getattr__(name: str):
    # Predictor pulls in the data transforms (albumentations, OpenCV): import it on first use only,
    # so `import pylon` and every CLI start stay fast.
    if name == "Predictor":
        from pylon.inference import Predictor

        return Predictor
    if name == "from_pretrained":
        from pylon.models.folder import from_pretrained

        return from_pretrained
    raise AttributeError(f"module 'pylon' has no attribute {name!r}")


__all__ = [
    "ModelOutput",
    "Predictor",
    "__version__",
    "create_model",
    "freeze_encoder",
    "from_pretrained",
    "list_models",
    "load_weights",
    "save_weights",
]
