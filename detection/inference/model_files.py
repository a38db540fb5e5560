"""The one loader of trained models: a `.ckpt`, `.onnx`, `.pt` or `.xml` (OpenVINO) file -> model + metadata.

Every way in opens model files here: `Detector.from_checkpoint`, `detection inspect`,
`detection export`, `evaluate_checkpoint` and the CLI's `--ckpt_path` check. The format
follows the file's suffix, in the one table `MODEL_FORMATS`; a new runtime is one more entry.
Whatever the format, a model that could not decide a part is refused here, with one line
naming the file and the field: non-finite weights, thresholds outside 0..1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from detection.core.errors import WeightsError
from detection.core.thresholds import threshold_problem
from detection.inference.onnx_model import load_onnx, onnx_meta, read_onnx
from detection.inference.openvino_model import load_openvino, openvino_meta
from detection.models.checkpoint import CheckpointMeta, load_model, meta_from_dict, open_checkpoint
from detection.models.runtime import DetectorModel, EagerModel, OutputSettings
from detection.models.torchscript import TorchScriptModel, load_torchscript
from detection.models.weight_files import check_finite


@dataclass(frozen=True)
class LoadedModel:
    """A trained model ready for the Detector, and what its file says about it."""

    model: DetectorModel
    meta: CheckpointMeta  # class names, category ids, the stored decision thresholds
    path: Path
    format: str  # the MODEL_FORMATS entry's name, e.g. "checkpoint", "ONNX"
    # The --report-threshold an exported model was made with (its score floor); None for a
    # checkpoint, which can report any score.
    report_threshold: float | None = None


@dataclass(frozen=True)
class ModelFormat:
    """How to open one kind of model file."""

    name: str
    load: Callable[[Path], LoadedModel]  # the model, ready to run
    read_meta: Callable[[Path], CheckpointMeta]  # the metadata only, without building a model


def _load_checkpoint(path: Path) -> LoadedModel:
    model, meta = load_model(path)
    return LoadedModel(EagerModel(model), meta, path, "checkpoint")


def _checkpoint_meta(path: Path) -> CheckpointMeta:
    meta, ckpt = open_checkpoint(path, mmap=True)
    model_state = (
        (key.removeprefix("model."), value)
        for key, value in ckpt["state_dict"].items()
        if key.startswith("model.") and isinstance(value, torch.Tensor)
    )
    check_finite(model_state, path)  # named as `load_model` names them
    return meta


def _load_onnx(path: Path) -> LoadedModel:
    model, meta = load_onnx(path)
    return LoadedModel(model, meta, path, "ONNX", report_threshold=model.floor)


def _onnx_meta(path: Path) -> CheckpointMeta:
    return onnx_meta(path, read_onnx(path)[0])


def _torchscript_info(path: Path) -> tuple[Any, dict[str, Any], CheckpointMeta]:
    module, info = load_torchscript(path)
    check_finite(module.state_dict().items(), path)
    for key in ("report_threshold", "min_score", "nms_thresh"):
        problem = threshold_problem(info.get(key))
        if problem is not None:
            raise WeightsError(f"{path}: field 'detection.json.{key}': {problem}")
    if "checkpoint" not in info:
        raise WeightsError(f"{path}: field 'detection.json.checkpoint': is missing")
    return (
        module,
        info,
        meta_from_dict(path, info["checkpoint"], section="detection.json.checkpoint"),
    )


def _load_torchscript(path: Path) -> LoadedModel:
    module, info, meta = _torchscript_info(path)
    settings = OutputSettings(
        float(info["min_score"]), float(info["nms_thresh"]), int(info["detections_per_img"])
    )
    model = TorchScriptModel(module, settings, str(path))
    return LoadedModel(model, meta, path, "TorchScript", report_threshold=settings.min_score)


def _load_openvino(path: Path) -> LoadedModel:
    model, meta = load_openvino(path)
    return LoadedModel(model, meta, path, "OpenVINO", report_threshold=model.floor)


# suffix -> format. Any other suffix is read as a checkpoint (Lightning names them freely).
MODEL_FORMATS: dict[str, ModelFormat] = {
    ".ckpt": ModelFormat("checkpoint", _load_checkpoint, _checkpoint_meta),
    ".onnx": ModelFormat("ONNX", _load_onnx, _onnx_meta),
    ".pt": ModelFormat("TorchScript", _load_torchscript, lambda path: _torchscript_info(path)[2]),
    ".xml": ModelFormat("OpenVINO", _load_openvino, openvino_meta),
}
DEFAULT_SUFFIX = ".ckpt"


def model_format(path: str | Path) -> ModelFormat:
    """The format of a model file, by its suffix (see `MODEL_FORMATS`)."""
    return MODEL_FORMATS.get(Path(path).suffix.lower(), MODEL_FORMATS[DEFAULT_SUFFIX])


def is_checkpoint(path: str | Path) -> bool:
    """True when `path` is read as a training checkpoint (not an exported model)."""
    return model_format(path) is MODEL_FORMATS[DEFAULT_SUFFIX]


def load_model_file(path: str | Path) -> LoadedModel:
    """Open a trained model of any format (see `MODEL_FORMATS`), on the CPU, ready to run.

    Args:
        path: a checkpoint written by `DetectionModule` (``.ckpt``), or a model exported by
            `detection export` (``.onnx``: run with onnxruntime; ``.pt``: TorchScript).

    Returns:
        A `LoadedModel`: the model behind the `DetectorModel` interface, and its metadata.

    Raises:
        WeightsError: the file is missing, not a regular file, not of its format, or holds a
            model that could not decide a part (non-finite weights, thresholds outside 0..1);
            the message names the file and the field.
        DetectionError: a runtime the format needs is not installed.
    """
    path = Path(path)
    return model_format(path).load(path)


def read_model_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of a model file of any format, checked as `load_model_file` checks it,
    without building the model (what a launcher needs before its workers load their own)."""
    path = Path(path)
    return model_format(path).read_meta(path)
