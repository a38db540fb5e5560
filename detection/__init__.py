"""detection: train, evaluate and run Faster R-CNN detectors on COCO-format data.

    from detection import DetectionModule, CocoDataModule, Detector, evaluate_coco

Names are imported on first use, so `import detection` stays fast and light.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"


def _lazy_exports() -> dict[str, str]:
    """Public name -> its module, read from the `if TYPE_CHECKING:` imports at the end of this
    file: the one list of the API, which type checkers and IDEs read too."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    block = next(
        n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
    )
    return {alias.name: node.module for node in block.body for alias in node.names}


_EXPORTS = _lazy_exports()

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
