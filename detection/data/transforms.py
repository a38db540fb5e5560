"""Albumentations pipelines declared in YAML as a list of {name: Transform, **kwargs}."""

from __future__ import annotations

import copy
import difflib
import warnings
from typing import Any

import albumentations as A

from detection.errors import InvalidInputError

# Scale jitter is an Affine zoom that keeps the canvas size. A plain RandomScale would be
# undone by torchvision's GeneralizedRCNNTransform, which resizes every image to min_size
# whatever its input size: only the size of objects *relative to the frame* survives it.
DEFAULT_TRAIN_TRANSFORMS: list[dict[str, Any]] = [
    {"name": "HorizontalFlip", "p": 0.5},
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
    {"name": "Affine", "scale": [0.75, 1.25], "keep_ratio": True, "p": 0.5},
]

# Evaluation sees the original pixels, so predictions are scored in ground-truth coordinates.
DEFAULT_EVAL_TRANSFORMS: list[dict[str, Any]] | None = None

_COMPOSITIONS = ("OneOf", "SomeOf", "Sequential", "OneOrOther", "SelectiveChannelTransform")


def build_transforms(
    spec: list[dict[str, Any]] | None,
    *,
    train: bool,
    min_visibility: float = 0.0,
    seed: int | None = None,
) -> A.Compose | None:
    """Build a bbox-safe albumentations Compose from a YAML-style spec; None for no transforms.

    Boxes are pascal_voc (xyxy pixels) with a ``labels`` field; they are clipped to the image
    and dropped when invalid or less than ``min_visibility`` of them stays visible. With
    ``train=False`` only pixel-value transforms are allowed, so predictions stay in the
    original image's coordinates.
    """
    if not spec:
        return None
    if not isinstance(spec, list):
        raise InvalidInputError(
            None,
            f"must be a list of {{name: ..., ...}} entries, not {type(spec).__name__}",
            field="transforms",
        )
    transforms = [_build_one(entry, f"transforms[{i}]", train) for i, entry in enumerate(spec)]
    bbox_params = A.BboxParams(
        format="pascal_voc",
        label_fields=["labels"],
        clip=True,
        filter_invalid_bboxes=True,
        min_visibility=min_visibility,
    )
    with warnings.catch_warnings():
        # Pixel-only pipelines (evaluation) leave the boxes alone; that is the point, not a slip.
        warnings.filterwarnings("ignore", message="Got processor for bboxes, but no transform")
        return A.Compose(transforms, bbox_params=bbox_params, seed=seed)


def _build_one(entry: Any, where: str, train: bool) -> A.BasicTransform | A.BaseCompose:
    if not isinstance(entry, dict) or "name" not in entry:
        raise InvalidInputError(
            None, f"must be a mapping with a 'name' key, got {entry!r}", record=where
        )
    kwargs = copy.deepcopy(entry)
    name = kwargs.pop("name")
    cls = getattr(A, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, (A.BasicTransform, A.BaseCompose))):
        raise InvalidInputError(None, _unknown_name_message(name), record=where, field="name")
    if issubclass(cls, A.BaseCompose):
        if name not in _COMPOSITIONS:
            raise InvalidInputError(
                None,
                f"'{name}' cannot be nested; use OneOf, SomeOf or Sequential",
                record=where,
                field="name",
            )
        children = kwargs.pop("transforms", None)
        if not isinstance(children, list) or not children:
            raise InvalidInputError(
                None,
                f"{name} needs a non-empty 'transforms' list",
                record=where,
                field="transforms",
            )
        kwargs["transforms"] = [
            _build_one(child, f"{where}.transforms[{i}]", train) for i, child in enumerate(children)
        ]
    elif not train and not issubclass(cls, A.ImageOnlyTransform):
        raise InvalidInputError(
            None,
            f"'{name}' moves pixels; evaluation transforms may only change pixel values, "
            "so that predictions stay in the original image's coordinates",
            record=where,
            field="name",
        )
    else:
        kwargs.setdefault("strict", True)  # a misspelt argument is an error, not a warning
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(None, f"{name}: {_one_line(error)}", record=where) from None


def _unknown_name_message(name: Any) -> str:
    known = [
        n
        for n in dir(A)
        if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)
    ]
    message = f"unknown albumentations transform {name!r}"
    close = difflib.get_close_matches(str(name), known, n=3)
    if close:
        message += f" (did you mean {', '.join(close)}?)"
    return message


def _one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines()]
    return "; ".join(
        line for line in lines if line and not line.startswith("For further information")
    )
