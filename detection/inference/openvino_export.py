"""Export a checkpoint as OpenVINO IR (model.xml + model.bin), float32 or INT8, with the ONNX
export's metadata in the IR's rt_info (see `detection.inference.openvino_model`).

The graph is the ONNX export's (one graph, any image size), read by OpenVINO's ONNX reader:
one traced graph for both runtimes, so they cannot drift apart. Weights stay float32
(`compress_to_fp16=False`: OpenVINO's default fp16 weight compression would move scores).

Reduced precisions are written only after the accuracy guard (`detection.inference.quantize`)
passed on the calibration split: `int8=True` quantizes with NNCF; `bf16=True` checks bf16
inference and, when it passes, records `verified_precision: "bf16"`, which makes bf16 the
default on CPUs with bf16 units (float32 elsewhere). `bf16_unchecked_reason` is the command's
default: check bf16 whenever this CPU has the units and a split to check on is known.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detection.core.errors import DetectionError
from detection.core.thresholds import REPORT_DEFAULT, ThresholdsLike
from detection.inference.cpu_features import CpuFeatures, cpu_features
from detection.inference.graph_export import export_onnx
from detection.inference.onnx_model import onnx_meta
from detection.inference.openvino_model import (
    IR_SUFFIX,
    OpenVinoModel,
    is_openvino,
    read_ov_model,
    require_openvino,
    set_metadata,
)
from detection.inference.predictor import Detector
from detection.inference.quantize import (
    CALIBRATION_IMAGES,
    MAX_CHANGED_SHARE,
    MAX_MAP50_DROP,
    CocoSplit,
    GuardReport,
    calibration_arrays,
    compare_models,
    default_split,
    enforce,
    quantize_model,
)


@dataclass(frozen=True)
class ReducedPrecision:
    """What to check or quantize, on which images, and how strictly."""

    int8: bool = False
    bf16: bool = False
    calibration: CocoSplit | None = None  # None: the checkpoint's validation split
    calibration_images: int = CALIBRATION_IMAGES
    max_map50_drop: float = MAX_MAP50_DROP
    max_changed_share: float = MAX_CHANGED_SHARE
    warn_only: bool = False  # the guard warns instead of refusing

    @property
    def wanted(self) -> bool:
        """True when anything besides the float32 export was asked for."""
        return self.int8 or self.bf16


def bf16_unchecked_reason(
    checkpoint: str | Path, calibration: CocoSplit | None, features: CpuFeatures | None = None
) -> str | None:
    """Why an export that was not told either way leaves bf16 unchecked, or None: check it.

    bf16 is the fastest path that keeps the decisions on CPUs with bf16 units, but only the
    guard can say it keeps them, and the guard needs those units and a split: without either
    the model is written float32 (its default everywhere) and this says why.
    """
    features = features or cpu_features()
    if not features.native_bf16:
        return "this CPU has no bf16 units; run the export with --bf16 on the line's CPU"
    if calibration is None:
        try:
            default_split(checkpoint)
        except DetectionError:
            return "the checkpoint names no validation split; name one with --calibration"
    return None


def _onnx_info(path: Path) -> dict[str, Any]:
    onnx = require_openvino("onnx")
    graph = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in graph.metadata_props}


def _detector(model: Any, info: dict[str, Any], precision: str) -> Detector:
    """A CPU Detector over an in-memory model, thresholds as exported."""
    return Detector(
        OpenVinoModel(model, info, precision),  # type: ignore[arg-type]
        onnx_meta("<export>", info),
        device="cpu",
        report_threshold=float(info["report_threshold"]),
    )


def _guard(
    reference: Detector, candidate: Detector, name: str, split: CocoSplit, reduced: ReducedPrecision
) -> GuardReport:
    report = compare_models(
        reference, candidate, split, name, reduced.max_map50_drop, reduced.max_changed_share
    )
    print(f"accuracy guard: {report.summary()}")
    return enforce(report, reduced.warn_only)


def export_openvino(
    checkpoint: str | Path,
    out: str | Path,
    thresholds: ThresholdsLike = None,
    report_threshold: float = REPORT_DEFAULT,
    reduced: ReducedPrecision | None = None,
) -> Path:
    """Write `out` (.xml, with its .bin beside it) from a checkpoint; see the module docstring.

    Raises DetectionError (one line) when OpenVINO or NNCF is missing, when the calibration
    split is missing, and AccuracyGuardError when a reduced precision fails the guard; nothing
    is written then.
    """
    ov = require_openvino()
    out = Path(out)
    if not is_openvino(out):
        raise DetectionError(f"{out}: an OpenVINO model is written as a {IR_SUFFIX} file")
    reduced = reduced or ReducedPrecision()
    if reduced.bf16 and not cpu_features().native_bf16:
        raise DetectionError(
            "this CPU has no bf16 units (avx512_bf16, amx_bf16): a bf16 check here would test "
            "float32; run the export with --bf16 on the CPU that will run the model"
        )
    # Before the minutes of tracing: a missing split fails now.
    split = (reduced.calibration or default_split(checkpoint)) if reduced.wanted else None
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.parent / f".{out.name}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        onnx_path = export_onnx(checkpoint, work / "model.onnx", thresholds, report_threshold)
        info = {**_onnx_info(onnx_path), "weights": "f32", "verified_precision": None}
        model = read_ov_model(onnx_path)
        onnx_path.unlink()
        if split is not None:
            model, info = _reduce(model, info, split, reduced)
        set_metadata(model, info)
        ov.save_model(model, str(work / out.name), compress_to_fp16=False)
        # The .bin first: a reader that sees the new .xml must find its weights.
        (work / out.name).with_suffix(".bin").replace(out.with_suffix(".bin"))
        (work / out.name).replace(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _reduce(
    model: Any, info: dict[str, Any], split: CocoSplit, reduced: ReducedPrecision
) -> tuple[Any, dict[str, Any]]:
    """Quantize and/or check bf16 against the float model on the split; the model to write."""
    reference = _detector(model, info, "f32")
    guards: dict[str, Any] = {}
    if reduced.int8:
        quantized = quantize_model(model, calibration_arrays(split, reduced.calibration_images))
        info = {**info, "weights": "int8"}
        report = _guard(reference, _detector(quantized, info, "f32"), "int8", split, reduced)
        guards["int8"] = report.to_dict()
        model = quantized
    if reduced.bf16:
        report = _guard(reference, _detector(model, info, "bf16"), "bf16", split, reduced)
        guards["bf16"] = report.to_dict()
        if report.passed:
            info = {**info, "verified_precision": "bf16"}
    return model, {**info, "accuracy_guard": guards, "calibration": str(split.annotations)}
