"""The traced exports: a checkpoint as one TorchScript or ONNX file that runs without this package.

`export_model` (export.py) picks the format from the suffix: `.onnx` writes ONNX (see `detection.inference.onnx_model`
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

Both exported formats open again with `Detector.from_checkpoint` (see `model_files`).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from detection.core.errors import OutputError, WeightsError
from detection.core.run_folder import output_folder, write_atomic
from detection.core.thresholds import REPORT_DEFAULT, ThresholdsLike, check_report_threshold
from detection.inference.level_merge import gathered_level_merge
from detection.inference.model_files import is_checkpoint, load_model_file, model_format
from detection.inference.onnx_model import INPUT_NAME, OUTPUT_NAMES, require
from detection.models.runtime import EagerModel
from detection.models.torchscript import EXTRA_FILE, load_torchscript

__all__ = ["export_onnx", "export_torchscript", "load_torchscript"]

ONNX_OPSET = 17


def deployable(
    checkpoint: str | Path, thresholds: ThresholdsLike, report_threshold: float
) -> tuple[EagerModel, dict[str, Any]]:
    """The checkpoint's model (CPU, float32, returning every score a Detector would need) and
    the metadata an exported file carries: thresholds resolved exactly as the Detector does."""
    report_threshold = check_report_threshold(report_threshold, "--report-threshold")
    if not is_checkpoint(checkpoint):
        raise WeightsError(
            f"{checkpoint}: an exported {model_format(checkpoint).name} model; export from its "
            "training checkpoint (.ckpt)"
        )
    loaded = load_model_file(checkpoint)
    assert isinstance(loaded.model, EagerModel)  # what the checkpoint format loads
    decision = loaded.meta.decision_thresholds(thresholds)
    model = loaded.model.with_min_score(decision.lowest(loaded.meta.class_names, report_threshold))
    in_use = dict(decision.per_class)
    meta = {**loaded.meta.to_dict(), "thresholds": in_use}
    info = {
        **meta,
        "label_thresholds": list(in_use.values()),  # index i is label i + 1
        "report_threshold": report_threshold,
        "min_score": model.settings.min_score,
        "nms_thresh": model.settings.nms_iou,
        "detections_per_img": model.settings.detections_per_image,
        "checkpoint": meta,
    }
    return model, info


def export_torchscript(
    checkpoint: str | Path,
    out: str | Path,
    thresholds: ThresholdsLike = None,
    report_threshold: float = REPORT_DEFAULT,
) -> Path:
    """Script a checkpoint's model (CPU, float32) and save it with its metadata to `out`;
    arguments and errors as `export_model`."""
    out = _check_out(out)
    model, info = deployable(checkpoint, thresholds, report_threshold)
    with warnings.catch_warnings(), model.applied() as torchvision_model:
        # torchvision's notes while scripting, and torch's notice that TorchScript is in
        # maintenance: torch.export cannot yet trace Faster R-CNN's data-dependent shapes.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(torchvision_model)
    info = {
        **info,
        "input": "list of CHW float tensors, RGB, values 0..1, any size",
        "output": "(losses, detections); detections[i] has boxes (xyxy pixels), scores, labels",
    }
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # Into memory first: torch's file writer aborts the process on a short write (a full
        # disk), which would leave the temporary file behind.
        torch.jit.save(scripted, buffer, _extra_files={EXTRA_FILE: json.dumps(info, indent=2)})
    # A half-written model file must never be deployed.
    write_atomic(out, buffer.getvalue(), durable=True)
    return out


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
    """Trace a checkpoint's model to ONNX (opset 17, any image size) with its metadata;
    arguments and errors as `export_model`."""
    out = _check_out(out)
    onnx = require("onnx")
    model, info = deployable(checkpoint, thresholds, report_threshold)
    buffer = io.BytesIO()
    with (
        warnings.catch_warnings(),
        torch.no_grad(),
        gathered_level_merge(),  # one gather, not a scatter a level: see level_merge.py
        model.applied() as torchvision_model,
    ):
        # Height and width differ so that the tracer cannot mistake one for the other.
        side = int(getattr(torchvision_model.transform, "min_size", (320,))[0])
        example = torch.rand(3, side, side + side // 4)
        # The tracer's notes on torchvision's Python scalars: known, and checked by the tests.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _OneImage(torchvision_model).eval(),
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
    write_atomic(out, graph.SerializeToString(), durable=True)
    return out


def _check_out(out: str | Path) -> Path:
    """`out` as a Path in an existing folder, refused before any work when it cannot become a
    model file."""
    out = Path(out)
    if out.is_dir():
        raise OutputError(out, "is a folder; name the model file to write, e.g. model.onnx")
    output_folder(out.parent)
    return out
