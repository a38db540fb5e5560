"""What a detection checkpoint carries besides weights, and how to rebuild a model from it."""

from __future__ import annotations

import reprlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detection.core.errors import WeightsError, first_line
from detection.core.thresholds import (
    DECISION_DEFAULT,
    Thresholds,
    ThresholdsLike,
    threshold_problem,
)
from detection.models.faster_rcnn import build_model
from detection.models.weight_files import check_finite, safe_torch_load

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
    # The default threshold and the per-class ones calibrated on validation, if any.
    thresholds: Thresholds = field(default_factory=Thresholds)
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain-types dict, safe for `torch.load(weights_only=True)`."""
        data = {k: v for k, v in asdict(self).items() if k != "thresholds"}
        return {**data, **self.thresholds.to_checkpoint()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMeta:
        """Inverse of `to_dict`."""
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise WeightsError(
                f"checkpoint metadata format {version!r} is newer than this version of detection "
                f"reads ({FORMAT_VERSION}): upgrade the package"
            )
        fields = {k: v for k, v in data.items() if k not in ("thresholds", "score_threshold")}
        return cls(**fields, thresholds=Thresholds.from_checkpoint(data))

    def decision_thresholds(self, override: ThresholdsLike = None) -> Thresholds:
        """The thresholds parts are decided by: the stored ones with the user's `override`
        applied (see `Thresholds.updated`), with a value for every class.

        The one place a model's thresholds meet the user's: the Detector, inspect, export and
        `evaluate_checkpoint` all call it. Raises ValueError for a class the model does not
        know or a value outside 0..1.
        """
        return self.thresholds.updated(override).resolved(self.class_names)


def open_checkpoint(path: str | Path, *, mmap: bool = False) -> tuple[CheckpointMeta, dict]:
    """(meta, whole checkpoint dict) of a DetectionModule checkpoint, loaded without running code;
    anything else is a one-line WeightsError. ``mmap`` leaves the tensors in the file."""
    ckpt = safe_torch_load(path, "checkpoint", mmap=mmap)
    if not isinstance(ckpt, dict) or CHECKPOINT_KEY not in ckpt or "state_dict" not in ckpt:
        raise WeightsError(f"{path}: not a detection checkpoint (no '{CHECKPOINT_KEY}' section)")
    if not isinstance(ckpt["state_dict"], dict):
        raise WeightsError(f"{path}: field 'state_dict': must be a dict of tensors")
    return meta_from_dict(path, ckpt[CHECKPOINT_KEY]), ckpt


def read_checkpoint(path: str | Path) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """Load a DetectionModule checkpoint without running code: (meta, model state dict)."""
    meta, ckpt = open_checkpoint(path)
    state = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    return meta, state


# Fields every checkpoint has carried since format 1, and their types.
_META_TYPES = {"model_name": str, "num_classes": int, "class_names": list, "category_ids": list}


def meta_from_dict(path: str | Path, data: Any, section: str = CHECKPOINT_KEY) -> CheckpointMeta:
    """CheckpointMeta from a model file's metadata section (``ckpt['detection']``, an exported
    model's ``checkpoint`` entry), or a WeightsError naming the file and the bad field."""

    def bad(field: str, problem: str) -> WeightsError:
        return WeightsError(f"{path}: field '{section}{field}': {problem}")

    if not isinstance(data, dict):
        raise bad("", f"must be a dict, not {type(data).__name__}")
    for name, kind in _META_TYPES.items():
        if name not in data:
            raise bad(f".{name}", "is missing")
        if not isinstance(data[name], kind) or isinstance(data[name], bool):
            raise bad(
                f".{name}", f"must be of type {kind.__name__}, got {reprlib.repr(data[name])}"
            )
    count = data["num_classes"]
    if count < 1:
        raise bad(".num_classes", f"must be at least 1, got {count}")
    for name, kind in (("class_names", str), ("category_ids", int)):
        values = data[name]
        if len(values) != count or not all(type(v) is kind for v in values):
            raise bad(f".{name}", f"must be {count} values of type {kind.__name__}")
    if not isinstance(data.get("model_args", {}), dict):
        raise bad(".model_args", "must be a dict of model options")
    stored = data.get("thresholds") or {}
    if not isinstance(stored, dict):
        raise bad(".thresholds", "must be a dict {class name: score threshold}")
    values = {"score_threshold": data.get("score_threshold", DECISION_DEFAULT)}
    values.update({f"thresholds.{name}": value for name, value in stored.items()})
    for name, value in values.items():
        problem = threshold_problem(value)
        if problem is not None:  # a class that could never fail a part, or always would
            raise bad(f".{name}", problem)
    try:
        return CheckpointMeta.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError, WeightsError) as err:
        raise bad("", first_line(err)) from None


def build_from_meta(meta: CheckpointMeta) -> nn.Module:
    """The untrained architecture a checkpoint's weights belong to (no download)."""
    return build_model(
        meta.model_name, meta.num_classes, weights=None, weights_backbone=None, **meta.model_args
    )


def load_model(path: str | Path) -> tuple[nn.Module, CheckpointMeta]:
    """Rebuild the trained model of a checkpoint, in eval mode on CPU.

    Returns:
        (model, meta): the model as `build_model` makes it for the checkpoint's settings (a
        torchvision `FasterRCNN` or a `BatchedFasterRCNN`), and the checkpoint's metadata.

    Raises:
        WeightsError: not a detection checkpoint, bad metadata (the field is named), weights
            that do not fit the model, or weights holding NaN or inf.
    """
    meta, state = read_checkpoint(path)
    check_finite(state.items(), path)
    try:
        model = build_from_meta(meta)
        # A model fine-tuned from pretrained weights has frozen batch norms (no batch counter);
        # the rebuilt one has plain batch norms, which compute the same thing in eval mode.
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (TypeError, ValueError, RuntimeError) as err:  # model_args or tensor shapes
        raise WeightsError(
            f"{path}: cannot rebuild {meta.model_name} from it: {first_line(err)}"
        ) from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(
            f"{path}: weights do not fit {meta.model_name} (missing {missing[:2]}, unexpected {unexpected[:2]})"
        )
    return model.eval(), meta
