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

`OnnxModel` is what `Detector.from_checkpoint("model.onnx")` runs in place of the torch model.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from detection.core.errors import DetectionError, WeightsError
from detection.models.checkpoint import CheckpointMeta, read_checkpoint

ONNX_EXTRA = 'pip install "detection[onnx]"'
ONNX_SUFFIX = ".onnx"
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


def is_onnx(path: str | Path) -> bool:
    """True when `path` names an ONNX model (by its suffix)."""
    return Path(path).suffix.lower() == ONNX_SUFFIX


class RoiSettings:
    """The settings the Detector reads from `model.roi_heads`; fixed in the graph at export."""

    def __init__(self, min_score: float, nms_thresh: float, detections_per_img: int) -> None:
        self.min_score = min_score
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self._score_thresh = min_score

    @property
    def score_thresh(self) -> float:
        """Lowest score returned: detections below the graph's own floor are already gone."""
        return self._score_thresh

    @score_thresh.setter
    def score_thresh(self, value: float) -> None:
        # A small tolerance: the floor went through JSON, the request through float maths.
        if value < self.min_score - 1e-9:
            raise DetectionError(
                f"this ONNX model returns scores from {self.min_score:g} up; a threshold of "
                f"{value:g} needs an export with --report-threshold {value:g} (or lower)"
            )
        self._score_thresh = float(value)


class OnnxModel:
    """onnxruntime session(s) called like torchvision's detector: list of images -> detections."""

    def __init__(self, path: str | Path, info: dict[str, Any], threads: int | None = None) -> None:
        self.path = str(path)
        self.info = info
        self.threads = threads
        self.providers = ["CPUExecutionProvider"]
        self.roi_heads = RoiSettings(
            float(info["min_score"]), float(info["nms_thresh"]), int(info["detections_per_img"])
        )
        self._session: Any = None
        self._pid = -1

    def eval(self) -> OnnxModel:
        """Nothing to switch: the graph is an inference graph. Returns self, like nn.Module."""
        return self

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

    def __call__(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """CHW float 0..1 RGB tensors -> per image {'boxes', 'scores', 'labels'} (CPU tensors)."""
        session = self.session()
        outputs = []
        for image in images:
            array = image.detach().float().cpu().numpy()
            boxes, scores, labels = session.run(list(OUTPUT_NAMES), {INPUT_NAME: array})
            scores_t = torch.from_numpy(scores)
            # torchvision keeps scores strictly above score_thresh; the graph did so at its floor.
            keep = scores_t > self.roi_heads.score_thresh
            outputs.append(
                {
                    "boxes": torch.from_numpy(boxes)[keep],
                    "scores": scores_t[keep],
                    "labels": torch.from_numpy(labels).long()[keep],
                }
            )
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


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata `detection export` stored in an ONNX model, JSON values decoded."""
    if not Path(path).is_file():
        raise WeightsError(f"{path}: ONNX model not found")
    session = make_session(str(path), ["CPUExecutionProvider"], threads=1)
    props = session.get_modelmeta().custom_metadata_map
    if "class_names" not in props:
        raise WeightsError(f"{path}: not exported by `detection export` (no class names)")
    return {key: json.loads(value) for key, value in props.items()}


def load_onnx(path: str | Path, threads: int | None = None) -> tuple[OnnxModel, CheckpointMeta]:
    """An exported ONNX model as (OnnxModel, CheckpointMeta), ready for `Detector(...)`."""
    info = read_metadata(path)
    # The checkpoint's metadata, its thresholds replaced by those the export fails parts by.
    return OnnxModel(path, info, threads), CheckpointMeta.from_dict(info["checkpoint"])


def read_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of a checkpoint or of an exported ONNX model, without building a model."""
    if is_onnx(path):
        return CheckpointMeta.from_dict(read_metadata(path)["checkpoint"])
    return read_checkpoint(path)[0]
