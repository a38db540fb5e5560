"""TorchScript export: a checkpoint becomes one file that runs without this package.

The file holds the scripted torchvision model and, as the extra file `detection.json`, the class
names, category ids and thresholds. To use it with nothing but torch:

    extra = {"detection.json": ""}
    model = torch.jit.load("model.pt", _extra_files=extra)
    info = json.loads(extra["detection.json"])
    losses, detections = model([image_chw_float_0_to_1])  # scripted models return both
    d = detections[0]  # boxes xyxy in the image's pixels, scores, labels 1..K
    thresholds = torch.tensor([float("inf")] + info["label_thresholds"])
    passed = not bool((d["scores"] >= thresholds[d["labels"]]).any())
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from detection.models.checkpoint import load_model
from detection.thresholds import REPORT_DEFAULT, ThresholdsLike

EXTRA_FILE = "detection.json"


def export_torchscript(
    checkpoint: str | Path,
    out: str | Path,
    thresholds: ThresholdsLike = None,
    report_threshold: float = REPORT_DEFAULT,
) -> Path:
    """Script a checkpoint's model (CPU, float32) and save it with its metadata to `out`."""
    model, meta = load_model(checkpoint)
    decision = meta.thresholds.updated(thresholds)
    per_label = decision.per_label(meta.class_names)
    # Same rule as Detector: the model must return every detection that can fail a part.
    model.roi_heads.score_thresh = decision.lowest(meta.class_names, report_threshold)
    with warnings.catch_warnings():
        # torchvision's notes while scripting, and torch's notice that TorchScript is in
        # maintenance: torch.export cannot yet trace Faster R-CNN's data-dependent shapes.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    info = {
        **meta.to_dict(),
        "label_thresholds": per_label,  # index i is label i + 1
        "report_threshold": float(report_threshold),
        "input": "list of CHW float tensors, RGB, values 0..1, any size",
        "output": "(losses, detections); detections[i] has boxes (xyxy pixels), scores, labels",
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(scripted, str(tmp), _extra_files={EXTRA_FILE: json.dumps(info, indent=2)})
    tmp.replace(out)  # a half-written model file must never be deployed
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
