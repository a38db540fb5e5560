"""An exported ONNX detector run by onnxruntime, behind the torch model's call interface.

`detection export --out model.onnx` writes one graph per image: input `image` (3, H, W) float
RGB 0..1 of any size, outputs `boxes` (N, 4) xyxy in that image's pixels, `scores` (N,) and
`labels` (N,) 1..K. The model's metadata_props hold JSON values: `class_names`, `category_ids`,
`thresholds` (class -> score that fails a part), `label_thresholds` (label i+1 at index i),
`report_threshold`, `min_score` (the lowest score the graph returns) and `checkpoint` (the
checkpoint's metadata with those thresholds). To run it with nothing but onnxruntime:

    session = onnxruntime.InferenceSession("model.onnx")
    info = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    boxes, scores, labels = session.run(None, {"image": image_chw_float32})
    passed = not any(s >= info["label_thresholds"][l - 1] for s, l in zip(scores, labels))

`OnnxModel` is what `Detector.from_checkpoint("model.onnx")` runs in place of the torch model;
`read_onnx` opens a file for the model loader (`detection.inference.model_files`), refusing one
whose metadata or weights could not decide a part.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from detection.core.errors import DetectionError, WeightsError, first_line
from detection.core.thresholds import threshold_problem
from detection.models.checkpoint import CheckpointMeta, meta_from_dict
from detection.models.runtime import Detections, OutputSettings, check_floor, keep_above
from detection.models.weight_files import check_regular_file

ONNX_EXTRA = 'pip install "detection[onnx]"'
INPUT_NAME = "image"
OUTPUT_NAMES = ("boxes", "scores", "labels")
_INHERITED_SESSIONS: list[Any] = []  # sessions a forked process got from its parent


def require(module: str) -> ModuleType:
    """Import an optional ONNX dependency, or fail with one line naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DetectionError(
            f"ONNX models need {module}, which is not installed: {ONNX_EXTRA}"
        ) from None


class OnnxModel:
    """onnxruntime session(s) behind the `DetectorModel` interface: list of images ->
    detections. The graph's settings were fixed at export; `min_score` can only rise."""

    def __init__(
        self, path: str | Path, settings: OutputSettings, threads: int | None = None
    ) -> None:
        self.path = str(path)
        self.settings = settings
        self.floor = settings.min_score  # the lowest score the graph itself returns
        self.threads = threads
        self.providers: list[Any] = ["CPUExecutionProvider"]
        self._session: Any = None
        self._pid = -1

    def with_min_score(self, min_score: float) -> OnnxModel:
        """The same graph, keeping detections above `min_score`; not below the export's floor."""
        model = OnnxModel(self.path, self.settings, self.threads)
        model.floor, model.providers = self.floor, list(self.providers)
        model.settings = replace(
            self.settings, min_score=check_floor(min_score, self.floor, self.path)
        )
        return model

    def to(self, device: str | torch.device) -> OnnxModel:
        """Run on CUDA when onnxruntime has its CUDA provider, else on the CPU."""
        device = torch.device(device)
        ort = require("onnxruntime")
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            self.providers = [
                ("CUDAExecutionProvider", {"device_id": device.index or 0}),
                "CPUExecutionProvider",
            ]
        else:
            if device.type == "cuda":
                warnings.warn(
                    "onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); "
                    "the ONNX model runs on the CPU",
                    stacklevel=2,
                )
            self.providers = ["CPUExecutionProvider"]
        self._session = None
        return self

    def session(self) -> Any:
        """This process's inference session, made on first use (sessions do not survive fork)."""
        if self._session is not None and self._pid != os.getpid():
            # Made before a fork: freeing it here would wait forever for its thread pool's
            # threads, which only the parent has. Keep it unused instead.
            _INHERITED_SESSIONS.append(self._session)
            self._session = None
        if self._session is None:
            self._session = make_session(self.path, self.providers, self.threads)
            self._pid = os.getpid()
        return self._session

    def __call__(self, images: list[torch.Tensor]) -> Detections:
        """CHW float 0..1 RGB tensors -> per image {'boxes', 'scores', 'labels'} (CPU tensors)."""
        session = self.session()
        outputs = []
        for image in images:
            array = image.detach().float().cpu().numpy()
            boxes, scores, labels = session.run(list(OUTPUT_NAMES), {INPUT_NAME: array})
            detections = {
                "boxes": torch.from_numpy(boxes),
                "scores": torch.from_numpy(scores),
                "labels": torch.from_numpy(labels).long(),
            }
            outputs.append(keep_above(detections, self.settings.min_score))
        return outputs


def make_session(path: str, providers: list[Any], threads: int | None = None) -> Any:
    """An onnxruntime session with full graph optimisation and `threads` intra-op threads."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Like torch, one thread per core this process may use (1 inside DataLoader workers).
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    if options.intra_op_num_threads > 1:
        # Spinning threads steal the cores that other processes of a job are using.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: no notes about unused initializers
    try:
        return ort.InferenceSession(path, options, providers=providers)
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{path}: cannot load the ONNX model ({first})") from None


def read_onnx(path: str | Path) -> tuple[dict[str, Any], Any]:
    """(metadata with JSON values decoded, the onnx ModelProto) of an exported model, checked:
    a model whose thresholds or weights could not decide a part is refused.

    Raises:
        WeightsError: not a regular file, not an ONNX model, not made by `detection export`,
            a metadata value that is not JSON or out of range, or non-finite weights; each
            message names the file and the field.
        DetectionError: the onnx package is missing (the message names the extra).
    """
    path = check_regular_file(path, "ONNX model")
    onnx = require("onnx")
    try:
        graph = onnx.load(str(path))
    except Exception as err:  # noqa: BLE001 - protobuf raises its own untyped errors
        raise WeightsError(f"{path}: cannot load the ONNX model ({first_line(err)})") from None
    props = {entry.key: entry.value for entry in graph.metadata_props}
    if "class_names" not in props:
        raise WeightsError(f"{path}: not exported by `detection export` (no class names)")
    info = {}
    for key, value in props.items():
        try:
            info[key] = json.loads(value)
        except json.JSONDecodeError as err:
            raise WeightsError(
                f"{path}: field '{key}': metadata is not valid JSON ({err})"
            ) from None
    check_scores(path, info)
    _check_finite_initializers(path, graph, onnx.numpy_helper)
    return info, graph


def check_scores(path: Path, info: dict[str, Any]) -> None:
    """Every threshold and score setting of the metadata in 0..1, or a WeightsError naming it."""
    values: dict[str, Any] = {}
    for key in ("report_threshold", "min_score", "nms_thresh"):
        if key not in info:
            raise WeightsError(f"{path}: field '{key}': is missing")
        values[key] = info[key]
    thresholds, per_label = info.get("thresholds") or {}, info.get("label_thresholds") or []
    if not isinstance(thresholds, dict) or not isinstance(per_label, list):
        raise WeightsError(f"{path}: field 'thresholds': must be {{class: score}} and a list")
    values.update({f"thresholds.{name}": value for name, value in thresholds.items()})
    values.update({f"label_thresholds[{i}]": value for i, value in enumerate(per_label)})
    for key, value in values.items():
        problem = threshold_problem(value)
        if problem is not None:
            raise WeightsError(f"{path}: field '{key}': {problem}")
    count = info.get("detections_per_img")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise WeightsError(f"{path}: field 'detections_per_img': must be an integer >= 1")


def _check_finite_initializers(path: Path, graph: Any, numpy_helper: Any) -> None:
    """Refuse NaN or inf in the graph's weights: such a model detects nothing, every part passes."""
    for initializer in graph.graph.initializer:
        array = numpy_helper.to_array(initializer)
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            raise WeightsError(
                f"{path}: field '{initializer.name}': weights hold NaN or inf (a diverged run?)"
            )


def load_onnx(path: str | Path, threads: int | None = None) -> tuple[OnnxModel, CheckpointMeta]:
    """An exported ONNX model as (OnnxModel, CheckpointMeta), ready for `Detector(...)`."""
    info, _ = read_onnx(path)
    settings = OutputSettings(
        float(info["min_score"]), float(info["nms_thresh"]), int(info["detections_per_img"])
    )
    return OnnxModel(path, settings, threads), onnx_meta(path, info)


def onnx_meta(path: str | Path, info: dict[str, Any]) -> CheckpointMeta:
    """The checkpoint's metadata an export carries, its thresholds those the export fails
    parts by."""
    if "checkpoint" not in info:
        raise WeightsError(f"{path}: field 'checkpoint': is missing")
    return meta_from_dict(path, info["checkpoint"], section="checkpoint")


_check_scores = check_scores  # the name openvino_model.py imported first; use check_scores
