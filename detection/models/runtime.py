"""The narrow interface between the Detector and any model it runs, and its eager form.

The Detector needs three settings of a model and nothing else of its insides: the lowest score
it returns, the IoU of its per-class NMS (tiles are merged with the same one) and how many
detections it keeps per image. `OutputSettings` holds them; every runtime (the eager torch
model here, ONNX Runtime and TorchScript in `detection.inference`) implements `DetectorModel`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN

from detection.core.errors import DetectionError
from detection.models.faster_rcnn import as_torchvision
from detection.models.pooler_scales import ensure_pooler_scales

Detections = list[dict[str, Tensor]]  # per image: boxes (N, 4) xyxy, scores (N,), labels (N,)


@dataclass(frozen=True)
class OutputSettings:
    """What a model returns per image: detections scoring above `min_score`, after per-class NMS
    at `nms_iou`, at most `detections_per_image` of them (torchvision's `box_score_thresh`,
    `box_nms_thresh` and `box_detections_per_img`)."""

    min_score: float
    nms_iou: float
    detections_per_image: int


@runtime_checkable
class DetectorModel(Protocol):
    """A detection model as the Detector runs it: CHW float 0..1 RGB images in, per image a dict
    of `boxes` (xyxy, the image's pixels), `scores` and `labels` (1..K) out."""

    @property
    def settings(self) -> OutputSettings:
        """The model's output settings."""
        ...

    def with_min_score(self, min_score: float) -> DetectorModel:
        """The same model returning detections scoring above `min_score` (the caller's model
        is left as it was). Raises DetectionError when the model cannot go that low."""
        ...

    def to(self, device: str | torch.device) -> DetectorModel:
        """Run on `device`; returns the model."""
        ...

    def __call__(self, images: list[Tensor]) -> Detections:
        """Detect objects in each image."""
        ...


class EagerModel:
    """A torch detection model (torchvision's `FasterRCNN` or a `BatchedFasterRCNN`) behind the
    `DetectorModel` interface; the only code that reads and writes its `roi_heads` settings."""

    def __init__(self, module: nn.Module, settings: OutputSettings | None = None) -> None:
        self.module = module.eval()
        heads = module.roi_heads
        ensure_pooler_scales(as_torchvision(module))  # a model built outside build_model
        self.settings = settings or OutputSettings(
            float(heads.score_thresh), float(heads.nms_thresh), int(heads.detections_per_img)
        )

    def with_min_score(self, min_score: float) -> EagerModel:
        """The same module, returning detections above `min_score` (set for each call only)."""
        return EagerModel(self.module, replace(self.settings, min_score=float(min_score)))

    def to(self, device: str | torch.device) -> EagerModel:
        """Move the module (in place, as `nn.Module.to` does); returns self."""
        self.module.to(device)
        return self

    @contextlib.contextmanager
    def applied(self) -> Iterator[FasterRCNN]:
        """The torchvision model with these settings in place for the block, restored after
        (export scripts or traces it inside the block, so the settings become the graph's)."""
        heads = self.module.roi_heads
        saved = (heads.score_thresh, heads.nms_thresh, heads.detections_per_img)
        heads.score_thresh = self.settings.min_score
        heads.nms_thresh = self.settings.nms_iou
        heads.detections_per_img = self.settings.detections_per_image
        try:
            yield as_torchvision(self.module)
        finally:
            heads.score_thresh, heads.nms_thresh, heads.detections_per_img = saved

    def __call__(self, images: list[Tensor]) -> Detections:
        """Run the module with these settings."""
        with self.applied():
            return self.module(images)


def as_detector_model(model: nn.Module | DetectorModel) -> DetectorModel:
    """`model` itself when it implements `DetectorModel`, else the torch module wrapped."""
    return model if isinstance(model, DetectorModel) else EagerModel(model)


def check_floor(requested: float, floor: float, source: str) -> float:
    """`requested` when an exported model with the score floor `floor` can serve it.

    An exported graph drops detections below its floor before they leave it, so a lower
    request cannot be met: a DetectionError says which export would.
    """
    # A small tolerance: the floor went through JSON, the request through float maths.
    if requested < floor - 1e-9:
        raise DetectionError(
            f"{source}: this exported model returns scores from {floor:g} up; a threshold of "
            f"{requested:g} needs an export with --report-threshold {requested:g} (or lower)"
        )
    return float(requested)


def keep_above(detections: dict[str, Tensor], min_score: float) -> dict[str, Tensor]:
    """The detections scoring above `min_score` (strictly, as torchvision keeps them)."""
    keep = detections["scores"] > min_score
    return {key: value[keep] for key, value in detections.items()}
