"""An exported detector run by OpenVINO on the CPU, behind the torch model's call interface.

`detection export --out model.xml` writes OpenVINO IR (model.xml + model.bin) with the ONNX
export's graph and signature: input `image` (3, H, W) float RGB 0..1 of any size, outputs
`boxes` (N, 4) xyxy in that image's pixels, `scores` (N,) and `labels` (N,) 1..K. The IR's
rt_info section `detection` holds the ONNX export's metadata (JSON strings: `class_names`,
`category_ids`, `thresholds`, `label_thresholds`, `report_threshold`, `min_score`,
`checkpoint`, ...) plus `weights` ('f32' or 'int8') and `verified_precision` (a reduced
inference precision the export's accuracy guard passed, or null). To run it with OpenVINO alone:

    core = openvino.Core()
    model = core.read_model("model.xml")
    info = {k: json.loads(model.get_rt_info(["detection", k]).astype(str))
            for k in model.get_rt_info()["detection"].astype(dict)}
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    boxes, scores, labels = compiled({"image": image_chw_float32}).to_tuple()

Set INFERENCE_PRECISION_HINT: without it OpenVINO computes bf16 by itself on CPUs with bf16
units, and scores then move in their third decimal.

`OpenVinoModel` is what `Detector.from_checkpoint("model.xml")` runs in place of the torch model.
"""

from __future__ import annotations

import copy
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
from detection.inference.cpu_features import cpu_features, default_precision
from detection.inference.onnx_model import INPUT_NAME, OUTPUT_NAMES, onnx_meta
from detection.inference.onnx_model import _check_scores as check_scores
from detection.models.checkpoint import CheckpointMeta
from detection.models.runtime import Detections, OutputSettings, check_floor, keep_above
from detection.models.weight_files import check_regular_file

OPENVINO_EXTRA = 'pip install "detection[openvino]"'
IR_SUFFIX = ".xml"
RT_SECTION = "detection"
# OpenVINO's names for the inference precisions a user may ask for.
PRECISIONS = {"f32": "f32", "fp32": "f32", "32": "f32", "bf16": "bf16"}


def require_openvino(module: str = "openvino") -> ModuleType:
    """Import OpenVINO (or NNCF), or fail with one line naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DetectionError(
            f"OpenVINO models need {module}, which is not installed: {OPENVINO_EXTRA}"
        ) from None


def is_openvino(path: str | Path) -> bool:
    """True when `path` names an OpenVINO IR model (by its suffix)."""
    return Path(path).suffix.lower() == IR_SUFFIX


def check_precision(precision: str) -> str:
    """'f32' or 'bf16' from a user's spelling; anything else is a one-line ValueError."""
    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision must be f32 or bf16, got '{precision}'")
    return PRECISIONS[precision]


def fix_empty_constants(graph: Any) -> int:
    """Make an ONNX graph's zero-length constants readable by OpenVINO; returns how many.

    OpenVINO's ONNX reader turns a Constant of shape (0,) into a scalar (openvino PR #2287).
    torchvision's batched NMS returns such a constant when no box is left, so an image without
    detections came back from OpenVINO with one garbage detection. ConstantOfShape keeps the
    empty shape. `graph` is an onnx.GraphProto, changed in place with its subgraphs.
    """
    onnx = require_openvino("onnx")
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    fixed = 0
    for node in list(graph.node):
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                fixed += fix_empty_constants(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                fixed += sum(fix_empty_constants(g) for g in attribute.graphs)
        values = [a.t for a in node.attribute if a.name == "value"]
        if node.op_type != "Constant" or not values or 0 not in values[0].dims:
            continue
        tensor, output = values[0], node.output[0]
        index = list(graph.node).index(node)
        shape = helper.make_node(
            "Constant",
            [],
            [f"{output}__shape"],
            value=numpy_helper.from_array(np.asarray(tensor.dims, np.int64)),
        )
        fill = helper.make_tensor("value", tensor.data_type, [1], [0])
        empty = helper.make_node("ConstantOfShape", [f"{output}__shape"], [output], value=fill)
        graph.node.remove(node)
        graph.node.insert(index, empty)
        graph.node.insert(index, shape)
        fixed += 1
    return fixed


def read_ov_model(path: str | Path) -> Any:
    """An openvino.Model from an IR file (.xml) or an ONNX file (zero-length constants fixed)."""
    ov = require_openvino()
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: OpenVINO model not found")
    try:
        if is_openvino(path):
            return ov.Core().read_model(str(path))
        onnx = require_openvino("onnx")
        graph = onnx.load(str(path))
        fix_empty_constants(graph.graph)
        return ov.Core().read_model(graph.SerializeToString(), b"")
    except DetectionError:
        raise
    except Exception as err:  # noqa: BLE001 - OpenVINO and onnx raise their own untyped errors
        raise WeightsError(f"{path}: cannot read the model ({first_line(err)})") from None


def model_metadata(model: Any, source: str | Path) -> dict[str, Any]:
    """The `detection` rt_info section of an openvino.Model, JSON values decoded."""
    if not model.has_rt_info([RT_SECTION, "class_names"]):
        raise WeightsError(f"{source}: not exported by `detection export` (no class names)")
    info = {}
    section = model.get_rt_info()[RT_SECTION]
    for key in list(section.astype(dict) if hasattr(section, "astype") else section):
        try:
            info[key] = json.loads(model.get_rt_info([RT_SECTION, key]).astype(str))
        except json.JSONDecodeError as err:
            raise WeightsError(
                f"{source}: field 'rt_info.{RT_SECTION}.{key}': not valid JSON ({err})"
            ) from None
    return info


def set_metadata(model: Any, info: dict[str, Any]) -> None:
    """Store `info` in the model's `detection` rt_info section, one JSON string a key."""
    for key, value in info.items():
        model.set_rt_info(json.dumps(value), [RT_SECTION, key])


def compile_config(precision: str, threads: int) -> dict[str, Any]:
    """The CPU plugin's settings: an explicit precision, one stream of `threads` threads."""
    return {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        # Pinned threads would fight the other processes of a job (decoding workers) for cores.
        "ENABLE_CPU_PINNING": False,
    }


class OpenVinoModel:
    """An OpenVINO model behind the `DetectorModel` interface: list of images -> detections.

    `source` is a path (.xml, or .onnx) or an openvino.Model in memory (the export's float and
    quantized models, before they are written). `precision` None takes `default_precision`.
    The graph's settings were fixed at export; `min_score` can only rise.
    """

    # OpenVINO's CPU plugin starts its thread pool when the model is read; a forked DataLoader
    # worker inherits a pool without threads and waits forever. The job runs it in its own
    # process (with its own threads) and lets the workers only decode.
    runs_in_forked_workers = False

    def __init__(
        self,
        source: str | Path | Any,
        info: dict[str, Any],
        precision: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.source = source
        self.path = str(source) if isinstance(source, str | Path) else "<in memory>"
        self.info = info
        self.threads = threads
        verified = info.get("verified_precision")
        self.precision = check_precision(precision) if precision else default_precision(verified)
        self.settings = OutputSettings(
            float(info["min_score"]), float(info["nms_thresh"]), int(info["detections_per_img"])
        )
        self.floor = self.settings.min_score  # the lowest score the graph itself returns
        self._request: Any = None
        self._outputs: list[Any] = []
        self._pid = -1

    @property
    def weights(self) -> str:
        """'int8' for a quantized model, else 'f32'."""
        return str(self.info.get("weights", "f32"))

    def describe(self) -> str:
        """Which runtime, precision and CPU units run this model, in one line."""
        ov = require_openvino()
        kind = "int8" if self.weights == "int8" else self.precision
        threads = self.threads or torch.get_num_threads()
        return (
            f"OpenVINO {ov.get_version().split('-')[0]} {kind} "
            f"({cpu_features().kernels(kind)}), {threads} thread(s)"
        )

    def with_min_score(self, min_score: float) -> OpenVinoModel:
        """The same graph, keeping detections above `min_score`; not below the export's floor."""
        model = copy.copy(self)  # shares a compiled model, if there is one already
        model.settings = replace(
            self.settings, min_score=check_floor(min_score, self.floor, self.path)
        )
        return model

    def to(self, device: str | torch.device) -> OpenVinoModel:
        """OpenVINO models run on the CPU here; CUDA is refused with a warning."""
        if torch.device(device).type != "cpu":
            warnings.warn(
                f"OpenVINO models run on the CPU; ignoring device '{device}'", stacklevel=2
            )
        return self

    def request(self) -> Any:
        """This process's compiled model's infer request, made on first use (not across fork)."""
        if self._request is None or self._pid != os.getpid():
            ov = require_openvino()
            core = ov.Core()
            model = (
                self.source
                if not isinstance(self.source, str | Path)
                else read_ov_model(self.source)
            )
            threads = self.threads or torch.get_num_threads()
            try:
                compiled = core.compile_model(model, "CPU", compile_config(self.precision, threads))
            except Exception as err:  # noqa: BLE001 - OpenVINO raises untyped errors
                raise WeightsError(
                    f"{self.path}: cannot compile the model ({first_line(err)})"
                ) from None
            self._outputs = [compiled.output(name) for name in OUTPUT_NAMES]
            self._request = compiled.create_infer_request()
            self._pid = os.getpid()
        return self._request

    def __call__(self, images: list[torch.Tensor]) -> Detections:
        """CHW float 0..1 RGB tensors -> per image {'boxes', 'scores', 'labels'} (CPU tensors)."""
        request = self.request()
        outputs = []
        for image in images:
            array = np.ascontiguousarray(image.detach().float().cpu().numpy())
            result = request.infer({INPUT_NAME: array})
            # The arrays are views of the request's buffers, which the next image overwrites.
            boxes, scores, labels = (np.array(result[o]) for o in self._outputs)
            detections = {
                "boxes": torch.from_numpy(boxes).reshape(-1, 4),
                "scores": torch.from_numpy(scores),
                "labels": torch.from_numpy(labels).long(),
            }
            outputs.append(keep_above(detections, self.settings.min_score))
        return outputs


def _check_finite_weights(path: str | Path, model: Any) -> None:
    """Refuse NaN or inf in the model's float weights: such a model detects nothing."""
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Constant" or not op.get_element_type().is_real():
            continue
        data = op.get_data()
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise WeightsError(
                f"{path}: field '{op.get_friendly_name()}': weights hold NaN or inf "
                "(a diverged run?)"
            )


def read_openvino(path: str | Path) -> tuple[dict[str, Any], Any]:
    """(metadata, openvino.Model) of an exported IR model, checked as `read_onnx` checks an
    ONNX one: thresholds in 0..1, finite weights, each problem named by file and field.

    Raises:
        WeightsError: not a regular file, not an IR model made by `detection export`, a bad
            metadata value or non-finite weights.
        DetectionError: OpenVINO is missing (the message names the extra).
    """
    path = check_regular_file(path, "OpenVINO model")
    model = read_ov_model(path)
    info = model_metadata(model, path)
    check_scores(path, info)
    _check_finite_weights(path, model)
    return info, model


def openvino_meta(path: str | Path) -> CheckpointMeta:
    """The metadata of an IR model, without compiling it."""
    return onnx_meta(path, read_openvino(path)[0])


def load_openvino(
    path: str | Path, precision: str | None = None, threads: int | None = None
) -> tuple[OpenVinoModel, CheckpointMeta]:
    """An exported IR model as (OpenVinoModel, CheckpointMeta), ready for `Detector(...)`."""
    info, _ = read_openvino(path)
    return OpenVinoModel(path, info, precision, threads), onnx_meta(path, info)


def start_line(path: str | Path) -> str:
    """What a job will run for an IR model, in one line: runtime, precision, units, CPU flags."""
    info = model_metadata(read_ov_model(path), path)
    precision = default_precision(info.get("verified_precision"))
    weights = "int8 weights" if info.get("weights") == "int8" else "f32 weights"
    features = cpu_features()
    units = features.kernels("int8") if info.get("weights") == "int8" else ""
    compute = features.kernels(precision)
    return (
        f"{path}: OpenVINO {require_openvino().get_version().split('-')[0]}, {weights}, "
        f"{precision} compute ({compute}{', int8 on ' + units if units else ''}); "
        f"{features.describe()}"
    )
