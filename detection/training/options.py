"""DetectionModule's typed argument groups (batched model, optimisation, evaluation) and their
range checks."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin, get_type_hints

from detection.core.errors import InvalidInputError
from detection.core.thresholds import DECISION_DEFAULT

# Names the batched model's options had before issue 20, as configs and checkpoints written
# then still hold them inside `model_kwargs`.
RENAMED_OPTIONS = {"matrix_nms": "fixpoint_nms", "masked_pooling": "pool_every_level"}


@dataclass(frozen=True)
class BatchedOptions:
    """Settings of the batched forward pass (`impl: batched`); see `BatchedFasterRCNN`.

    Attributes:
        fixpoint_nms: the RPN's NMS as exact greedy NMS by fixed-point iteration over the whole
            batch (no host sync); None: on CUDA only.
        pool_every_level: RoI pooling runs every FPN level over all boxes and keeps each box's
            own level by a mask (no host sync); None: on CUDA only.
        channels_last: the backbone in NHWC memory format (faster convolutions on tensor cores).
        compile_backbone: `torch.compile` the backbone in place.
        pad_multiple: pad batches to a multiple of this many pixels (fixed shapes for compiled
            or captured graphs); None: the model's own `size_divisible`.
    """

    fixpoint_nms: bool | None = None
    pool_every_level: bool | None = None
    channels_last: bool = False
    compile_backbone: bool = False
    pad_multiple: int | None = None

    def model_arguments(self) -> dict[str, Any]:
        """The options that differ from their defaults, as `build_model` keyword arguments."""
        default = BatchedOptions()
        changed = {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if getattr(self, field.name) != getattr(default, field.name)
        }
        return changed


def split_model_kwargs(
    batched: BatchedOptions | Mapping[str, Any] | None, model_kwargs: Mapping[str, Any] | None
) -> tuple[BatchedOptions, dict[str, Any]]:
    """Separate the batched options from torchvision's `FasterRCNN` arguments.

    Configs and checkpoints written before the options were typed carry them inside
    `model_kwargs`, some under their old names; they move into the `BatchedOptions` here, with a
    DeprecationWarning.

    Args:
        batched: the typed options (a mapping when Lightning rebuilds the module from a
            checkpoint's hyper-parameters), or None for the defaults.
        model_kwargs: torchvision's `FasterRCNN` arguments, possibly with batched options.

    Returns:
        The options and the remaining torchvision arguments.

    Raises:
        InvalidInputError: an unknown option name, or one option given in both places.
    """
    given = dict(batched) if isinstance(batched, Mapping) else {}
    try:
        options = batched if isinstance(batched, BatchedOptions) else BatchedOptions(**given)
    except TypeError as err:
        raise InvalidInputError(None, str(err), field="batched") from err
    rest = dict(model_kwargs or {})
    names = {field.name for field in dataclasses.fields(BatchedOptions)}
    moved = {}
    for key in [k for k in rest if k in names or k in RENAMED_OPTIONS]:
        new = RENAMED_OPTIONS.get(key, key)
        if new in moved or getattr(options, new) != getattr(BatchedOptions(), new):
            raise InvalidInputError(None, f"{new} is given twice", field="model_kwargs")
        moved[new] = rest.pop(key)
        warnings.warn(
            f"model_kwargs.{key} is deprecated: set batched.{new} instead",
            DeprecationWarning,
            stacklevel=3,
        )
    return dataclasses.replace(options, **moved), rest


@dataclass(frozen=True)
class OptimizationOptions:
    """How DetectionModule trains (see `DetectionModule.optimizers_for`).

    Attributes:
        optimizer: ``"sgd"`` or ``"adamw"``.
        lr: the learning rate after the warmup.
        momentum: SGD's momentum.
        weight_decay: weight decay (decoupled for AdamW).
        scheduler: ``"multistep"`` (milestones, gamma), ``"cosine"`` or ``"constant"``, after
            the warmup.
        milestones: where ``multistep`` multiplies the learning rate by `gamma`.
        milestones_unit: whether milestones count epochs or optimizer steps.
        gamma: the factor of each milestone.
        warmup_iters: optimizer steps of the linear warmup from ``warmup_factor * lr``.
        warmup_factor: the learning rate's fraction at the first step.
        max_nonfinite_steps: non-finite losses in a row (each step skipped) before the run stops.

    Raises:
        InvalidInputError: a number out of its range (a negative lr...) or an unknown choice.
    """

    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: list[int] | None = None
    milestones_unit: Literal["epoch", "step"] = "epoch"
    gamma: float = 0.1
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    max_nonfinite_steps: int = 10

    def __post_init__(self) -> None:
        check_options(self)


@dataclass(frozen=True)
class EvaluationOptions:
    """How validation and test score a model. They shape reports, not weights: a run from a
    checkpoint (``--ckpt_path``) takes the ones the user gives rather than the checkpoint's.

    Attributes:
        eval_backend: ``"faster"`` (faster-coco-eval) or ``"pycocotools"``.
        area_ranges: extra COCO area ranges by name, ``{name: [min, max]}`` in pixels².
        iou_threshold: IoU at which the operating point counts a detection as a hit.
        score_threshold: the default decision threshold (per-class ones are calibrated).
        target_recall: calibrate per-class thresholds for this recall instead of best F1.

    Raises:
        InvalidInputError: a number out of its range or an unknown backend.
    """

    eval_backend: Literal["faster", "pycocotools"] = "faster"
    area_ranges: dict[str, list[float]] | None = None
    iou_threshold: float = 0.5
    score_threshold: float = DECISION_DEFAULT
    target_recall: float | None = None

    def __post_init__(self) -> None:
        check_options(self)


def check_options(options: Any) -> None:
    """Refuse a group's impossible numbers and unknown choices with a one-line error that names
    the field; jsonargparse checks the types earlier, a Python caller only meets this."""
    values = {field.name: getattr(options, field.name) for field in dataclasses.fields(options)}
    check_hyperparameters(values)
    for name, hint in get_type_hints(type(options)).items():
        choices = get_args(hint) if get_origin(hint) is Literal else ()
        if choices and values[name] not in choices:
            raise InvalidInputError(
                None, f"must be one of {list(choices)}, got {values[name]!r}", field=name
            )


# Numbers no run can use, refused before anything is built: name -> (test, what it must be).
# A list (min_size, milestones) is checked item by item; None means "not set".
_NUMBER_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "num_classes": (lambda v: v >= 1, "1 or more"),
    "min_size": (lambda v: v >= 1, "1 or more"),
    "max_size": (lambda v: v >= 1, "1 or more"),
    "lr": (lambda v: v > 0, "above 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "weight_decay": (lambda v: v >= 0, "0 or more"),
    "milestones": (lambda v: v >= 0, "0 or more"),
    "gamma": (lambda v: v > 0, "above 0"),
    "warmup_iters": (lambda v: v >= 0, "0 or more"),
    "warmup_factor": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "max_nonfinite_steps": (lambda v: v >= 1, "1 or more"),
    "iou_threshold": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "score_threshold": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "target_recall": (lambda v: 0 < v <= 1, "in (0, 1]"),
}


def check_hyperparameters(values: Mapping[str, Any]) -> None:
    """Refuse impossible DetectionModule arguments (a negative lr...) with a one-line error
    naming the field (its name without the group: ``lr``)."""
    for name, (ok, rule) in _NUMBER_RULES.items():
        value = values.get(name)
        for number in value if isinstance(value, list | tuple) else [value]:
            if number is None:
                continue
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise InvalidInputError(None, f"must be a number, got {number!r}", field=name)
            if not math.isfinite(number) or not ok(number):
                raise InvalidInputError(None, f"must be {rule}, got {number!r}", field=name)
