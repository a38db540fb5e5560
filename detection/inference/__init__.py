"""Inference: the Detector API, batch inspection jobs, tiling, drawing and TorchScript export."""

from detection.inference.export import export_torchscript, load_torchscript
from detection.inference.job import InspectConfig, run_inspect
from detection.inference.predictor import Detector, Prediction

__all__ = [
    "Detector",
    "InspectConfig",
    "Prediction",
    "export_torchscript",
    "load_torchscript",
    "run_inspect",
]
