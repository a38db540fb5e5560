"""What a detection checkpoint carries besides weights, and how to rebuild a model from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection import FasterRCNN

from detection.errors import WeightsError
from detection.models.faster_rcnn import build_model, safe_torch_load

CHECKPOINT_KEY = "detection"
FORMAT_VERSION = 1


@dataclass
class CheckpointMeta:
    """Everything needed to rebuild and use a trained detector, stored under `ckpt['detection']`."""

    model_name: str
    num_classes: int
    class_names: list[str]
    category_ids: list[int]
    model_args: dict[str, Any] = field(default_factory=dict)  # min_size, max_size, extra kwargs
    # Per-class score thresholds calibrated on validation (class name -> threshold), if any.
    thresholds: dict[str, float] | None = None
    score_threshold: float = 0.5  # used for classes without a calibrated threshold
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict, safe for `torch.load(weights_only=True)`."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMeta:
        """Inverse of `to_dict`."""
        return cls(**data)

    def class_thresholds(self, overrides: dict[str, float] | float | None = None) -> list[float]:
        """Score threshold per label 1..K: overrides, else calibrated, else the default."""
        if isinstance(overrides, int | float):
            return [float(overrides)] * self.num_classes
        chosen = {**(self.thresholds or {}), **(overrides or {})}
        unknown = set(overrides or {}) - set(self.class_names)
        if unknown:
            raise ValueError(
                f"thresholds name unknown classes {sorted(unknown)}; known: {self.class_names}"
            )
        return [float(chosen.get(name, self.score_threshold)) for name in self.class_names]


def read_checkpoint(path: str | Path) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """Load a DetectionModule checkpoint without running code: (meta, model state dict)."""
    ckpt = safe_torch_load(path, "checkpoint")
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "state_dict" not in ckpt:
        raise WeightsError(f"{path}: not a detection checkpoint (no '{CHECKPOINT_KEY}' section)")
    meta = CheckpointMeta.from_dict(ckpt[CHECKPOINT_KEY])
    state = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    return meta, state


def build_from_meta(meta: CheckpointMeta) -> FasterRCNN:
    """The untrained architecture a checkpoint's weights belong to (no download)."""
    return build_model(
        meta.model_name, meta.num_classes, weights=None, weights_backbone=None, **meta.model_args
    )


def load_model(path: str | Path) -> tuple[FasterRCNN, CheckpointMeta]:
    """Rebuild the trained model of a checkpoint, in eval mode on CPU."""
    meta, state = read_checkpoint(path)
    model = build_from_meta(meta)
    # A model fine-tuned from pretrained weights has frozen batch norms (no batch counter); the
    # rebuilt one has plain batch norms, which compute the same thing in eval mode.
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(
            f"{path}: weights do not fit {meta.model_name} (missing {missing[:2]}, unexpected {unexpected[:2]})"
        )
    return model.eval(), meta
