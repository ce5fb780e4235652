"""Using a trained model: ``Predictor`` for images and DICOMs, post-hoc CAMs, ONNX export."""

from pylon.inference.predictor import Predictor
from pylon.inference.result import Failure, Prediction

__all__ = ["Failure", "Prediction", "Predictor"]
