"""An exported TorchScript detector (`detection export --out model.pt`) behind `DetectorModel`.

The file holds the scripted torchvision model and, as the extra file `detection.json`, the
metadata the ONNX export also carries (see `detection.inference.export`).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from detection.core.errors import WeightsError, first_line
from detection.models.runtime import Detections, OutputSettings, check_floor, keep_above
from detection.models.weight_files import check_regular_file

EXTRA_FILE = "detection.json"


def load_torchscript(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Load an exported model and its metadata (class names, thresholds, ...).

    Raises:
        WeightsError: not a regular file, not a TorchScript archive, or no readable
            `detection.json` in it.
    """
    path = check_regular_file(path, "TorchScript model")
    extra = {EXTRA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is in maintenance
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError and others
        raise WeightsError(
            f"{path}: cannot load the TorchScript model ({first_line(err)})"
        ) from None
    if not extra[EXTRA_FILE]:
        raise WeightsError(f"{path}: not exported by `detection export` (no {EXTRA_FILE})")
    try:
        info = json.loads(extra[EXTRA_FILE])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WeightsError(f"{path}: field '{EXTRA_FILE}': not valid JSON ({err})") from None
    if not isinstance(info, dict):
        raise WeightsError(f"{path}: field '{EXTRA_FILE}': must be a JSON object")
    return module.eval(), info


class TorchScriptModel:
    """A scripted detector: its settings were fixed in the graph at export."""

    def __init__(self, module: torch.jit.ScriptModule, settings: OutputSettings, path: str) -> None:
        self.module = module
        self.settings = settings
        self.floor = settings.min_score
        self.path = path

    def with_min_score(self, min_score: float) -> TorchScriptModel:
        """The same graph with detections above `min_score`; not below the export's floor."""
        model = TorchScriptModel(self.module, self.settings, self.path)
        model.floor = self.floor
        model.settings = replace(
            self.settings, min_score=check_floor(min_score, self.floor, self.path)
        )
        return model

    def to(self, device: str | torch.device) -> TorchScriptModel:
        """Move the scripted module; returns self."""
        self.module.to(device)
        return self

    def __call__(self, images: list[Tensor]) -> Detections:
        """Scripted detection models return (losses, detections): the detections, filtered."""
        _, detections = self.module(images)
        return [keep_above(d, self.settings.min_score) for d in detections]
