"""Export a checkpoint as one file that runs without this package: TorchScript or ONNX.

The format follows the file's suffix: `.onnx` writes ONNX (see `detection.inference.onnx_model`
for how to run it), anything else TorchScript. The TorchScript file holds the scripted
torchvision model and, as the extra file `detection.json`, the class names, category ids and
thresholds. To use it with nothing but torch:

    extra = {"detection.json": ""}
    model = torch.jit.load("model.pt", _extra_files=extra)
    info = json.loads(extra["detection.json"])
    losses, detections = model([image_chw_float_0_to_1])  # scripted models return both
    d = detections[0]  # boxes xyxy in the image's pixels, scores, labels 1..K
    thresholds = torch.tensor([float("inf")] + info["label_thresholds"])
    passed = not bool((d["scores"] >= thresholds[d["labels"]]).any())
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from detection.core.thresholds import REPORT_DEFAULT, ThresholdsLike
from detection.inference.onnx_model import INPUT_NAME, OUTPUT_NAMES, is_onnx, require
from detection.inference.predictor import Detector
from detection.models.faster_rcnn import as_torchvision

EXTRA_FILE = "detection.json"
ONNX_OPSET = 17


def deployable(
    checkpoint: str | Path, thresholds: ThresholdsLike, report_threshold: float
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The checkpoint's model (CPU, float32, returning every score a Detector would need) and
    the metadata an exported file carries: thresholds resolved exactly as the Detector does."""
    detector = Detector.from_checkpoint(
        checkpoint,
        device="cpu",
        precision="32",
        thresholds=thresholds,
        report_threshold=report_threshold,
    )
    # Scripting and tracing take torchvision's implementation (same modules and settings).
    model, in_use = as_torchvision(detector.model), detector.thresholds
    meta = {**detector.meta.to_dict(), "thresholds": in_use}
    info = {
        **meta,
        "label_thresholds": list(in_use.values()),  # index i is label i + 1
        "report_threshold": float(report_threshold),
        "min_score": float(model.roi_heads.score_thresh),
        "nms_thresh": float(model.roi_heads.nms_thresh),
        "detections_per_img": int(model.roi_heads.detections_per_img),
        "checkpoint": meta,
    }
    return model, info


def export_model(
    checkpoint: str | Path,
    out: str | Path,
    thresholds: ThresholdsLike = None,
    report_threshold: float = REPORT_DEFAULT,
) -> Path:
    """Export to ONNX when `out` ends in .onnx, else to TorchScript."""
    export = export_onnx if is_onnx(out) else export_torchscript
    return export(checkpoint, out, thresholds=thresholds, report_threshold=report_threshold)


def export_torchscript(
    checkpoint: str | Path,
    out: str | Path,
    thresholds: ThresholdsLike = None,
    report_threshold: float = REPORT_DEFAULT,
) -> Path:
    """Script a checkpoint's model (CPU, float32) and save it with its metadata to `out`."""
    model, info = deployable(checkpoint, thresholds, report_threshold)
    with warnings.catch_warnings():
        # torchvision's notes while scripting, and torch's notice that TorchScript is in
        # maintenance: torch.export cannot yet trace Faster R-CNN's data-dependent shapes.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    info = {
        **info,
        "input": "list of CHW float tensors, RGB, values 0..1, any size",
        "output": "(losses, detections); detections[i] has boxes (xyxy pixels), scores, labels",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return _write_atomic(
            out,
            lambda tmp: torch.jit.save(
                scripted, str(tmp), _extra_files={EXTRA_FILE: json.dumps(info, indent=2)}
            ),
        )


class _OneImage(torch.nn.Module):
    """One CHW image in, (boxes, scores, labels) out: the graph's plain-tensor signature."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        detections = self.model([image])[0]
        return detections["boxes"], detections["scores"], detections["labels"]


def export_onnx(
    checkpoint: str | Path,
    out: str | Path,
    thresholds: ThresholdsLike = None,
    report_threshold: float = REPORT_DEFAULT,
) -> Path:
    """Trace a checkpoint's model to ONNX (opset 17, any image size) with its metadata."""
    onnx = require("onnx")
    model, info = deployable(checkpoint, thresholds, report_threshold)
    # Height and width differ so that the tracer cannot mistake one for the other.
    side = int(getattr(model.transform, "min_size", (320,))[0])
    example = torch.rand(3, side, side + side // 4)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer's notes on torchvision's Python scalars: known, and checked by the tests.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _OneImage(model).eval(),
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={
                INPUT_NAME: {1: "height", 2: "width"},
                **{name: {0: "detections"} for name in OUTPUT_NAMES},
            },
        )
    graph = onnx.load_from_string(buffer.getvalue())
    for key, value in info.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    return _write_atomic(out, lambda tmp: onnx.save(graph, str(tmp)))


def _write_atomic(out: str | Path, write: Any) -> Path:
    """Write through a temporary file: a half-written model file must never be deployed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    write(tmp)
    tmp.replace(out)
    return out


def load_torchscript(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load an exported model and its metadata (class names, thresholds, ...)."""
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # see export_torchscript
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    return module.eval(), json.loads(extra[EXTRA_FILE])
