"""detection: train, evaluate and run Faster R-CNN detectors on COCO-format data.

    from detection import DetectionModule, CocoDataModule, Detector, evaluate_coco

Names are imported on first use, so `import detection` stays fast and light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # training
    "DetectionModule": "detection.training.module",
    "CocoDataModule": "detection.data.datamodule",
    "CocoDetection": "detection.data.coco",
    "build_transforms": "detection.data.transforms",
    "build_model": "detection.models.faster_rcnn",
    "available_models": "detection.models.faster_rcnn",
    "CheckpointMeta": "detection.models.checkpoint",
    "load_model": "detection.models.checkpoint",
    # evaluation
    "evaluate_coco": "detection.evaluation.coco",
    "evaluate_detections": "detection.evaluation.evaluator",
    "DetectionEvaluator": "detection.evaluation.evaluator",
    "evaluate_checkpoint": "detection.training.checkpoint_eval",
    "Thresholds": "detection.core.thresholds",
    # inference
    "Detector": "detection.inference.predictor",
    "Prediction": "detection.inference.predictor",
    "InspectConfig": "detection.inspect.job",
    "run_inspect": "detection.inspect.job",
    "export_model": "detection.inference.export",
    "export_onnx": "detection.inference.export",
    "export_torchscript": "detection.inference.export",
    "load_torchscript": "detection.inference.export",
    "load_model_file": "detection.inference.model_files",
    # data tools
    "read_image": "detection.core.images",
    "generate_dataset": "detection.data.synthetic",
    "lint_coco": "detection.data.lint",
    "voc_to_coco": "detection.data.formats",
    "yolo_to_coco": "detection.data.formats",
    "coco_to_voc": "detection.data.formats",
    "coco_to_yolo": "detection.data.formats",
    "convert_deeppcb": "detection.data.deeppcb",
    # errors
    "DetectionError": "detection.core.errors",
    "InvalidInputError": "detection.core.errors",
    "ImageReadError": "detection.core.errors",
    "WeightsError": "detection.core.errors",
    "ConfigError": "detection.core.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'detection' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load lazily
    from detection.core.errors import (
        ConfigError,
        DetectionError,
        ImageReadError,
        InvalidInputError,
        WeightsError,
    )
    from detection.core.images import read_image
    from detection.core.thresholds import Thresholds
    from detection.data.coco import CocoDetection
    from detection.data.datamodule import CocoDataModule
    from detection.data.deeppcb import convert_deeppcb
    from detection.data.formats import coco_to_voc, coco_to_yolo, voc_to_coco, yolo_to_coco
    from detection.data.lint import lint_coco
    from detection.data.synthetic import generate_dataset
    from detection.data.transforms import build_transforms
    from detection.evaluation.coco import evaluate_coco
    from detection.evaluation.evaluator import DetectionEvaluator, evaluate_detections
    from detection.inference.export import (
        export_model,
        export_onnx,
        export_torchscript,
        load_torchscript,
    )
    from detection.inference.model_files import load_model_file
    from detection.inference.predictor import Detector, Prediction
    from detection.inspect.job import InspectConfig, run_inspect
    from detection.models.checkpoint import CheckpointMeta, load_model
    from detection.models.faster_rcnn import available_models, build_model
    from detection.training.checkpoint_eval import evaluate_checkpoint
    from detection.training.module import DetectionModule
