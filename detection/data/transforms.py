"""Albumentations pipelines declared in YAML as a list of {name: Transform, **kwargs}."""

from __future__ import annotations

import copy
import difflib
import warnings
from collections.abc import Iterable
from typing import Any

import albumentations as A
import numpy as np

from detection.core.errors import InvalidInputError

# Cheap per-image work only: the data workers should cost little more than decoding.
# Brightness/contrast jitter runs on the device instead (DEFAULT_DEVICE_TRANSFORMS in
# detection.data.device_transforms). Scale jitter is left to the model: torchvision's
# GeneralizedRCNNTransform resizes every image to min_size whatever its input size, so a
# RandomScale here would be undone, and an Affine zoom costs several times the decode.
# build_model(min_size=[640, ..., 800]) draws a size per image instead, on the device.
DEFAULT_TRAIN_TRANSFORMS: list[dict[str, Any]] = [{"name": "HorizontalFlip", "p": 0.5}]

# Pixel transforms that treat every channel alike, so a grayscale image may stay 1-channel
# through them (a third of the work). Geometric (dual) transforms are all channel-blind.
# Not CLAHE: on RGB it equalizes the L channel of LAB, which differs from equalizing gray.
GRAY_SAFE_PIXEL_TRANSFORMS = frozenset(
    {
        "RandomBrightnessContrast",
        "RandomGamma",
        "Equalize",
        "InvertImg",
        "Posterize",
        "Solarize",
        "GaussianBlur",
        "Blur",
        "MedianBlur",
        "MotionBlur",
        "Defocus",
        "Sharpen",
        "UnsharpMask",
        "Emboss",
        "GaussNoise",
        "MultiplicativeNoise",
        "Downscale",
        "ImageCompression",
    }
)

_COMPOSITIONS = ("OneOf", "SomeOf", "Sequential", "OneOrOther", "SelectiveChannelTransform")

# Symmetries of the image rectangle: boxes inside the image with an area stay so, with the same
# pixel area, so without minimum sizes there is nothing to filter after them.
_SYMMETRIES = tuple(
    getattr(A, name)
    for name in ("HorizontalFlip", "VerticalFlip", "Transpose", "RandomRotate90", "D4")
    if hasattr(A, name)
)


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
    entries = spec_entries(spec, "transforms")
    transforms = [_build_one(entry, f"transforms[{i}]", train) for i, entry in enumerate(entries)]
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


def spec_entries(spec: Any, field: str) -> list[Any]:
    """The entries of a YAML transform list, or a one-line error naming the field."""
    if not isinstance(spec, list):
        raise InvalidInputError(
            None,
            f"must be a list of {{name: ..., ...}} entries, not {type(spec).__name__}",
            field=field,
        )
    return spec


def split_entry(entry: Any, where: str) -> tuple[Any, dict[str, Any]]:
    """(name, arguments) of one {name: ..., **arguments} entry; the arguments are a copy."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise InvalidInputError(
            None, f"must be a mapping with a 'name' key, got {entry!r}", record=where
        )
    kwargs = copy.deepcopy(entry)
    return kwargs.pop("name"), kwargs


def _build_one(entry: Any, where: str, train: bool) -> A.BasicTransform | A.BaseCompose:
    name, kwargs = split_entry(entry, where)
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
    try:
        if issubclass(cls, A.BasicTransform):
            try:
                # strict: a misspelt argument is an error, not a warning.
                return cls(**kwargs, strict=True)
            except TypeError as error:
                if "'strict'" not in str(error):
                    raise
                # A few transforms have their own __init__ without it, and reject unknown names.
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(None, f"{name}: {_one_line(error)}", record=where) from None


def _unknown_name_message(name: Any) -> str:
    known = [
        n
        for n in dir(A)
        if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)
    ]
    return f"unknown albumentations transform {name!r}{did_you_mean(name, known, n=3)}"


def did_you_mean(name: Any, known: Iterable[str], n: int = 1) -> str:
    """' (did you mean A, B?)' with the known names closest to a misspelt one, or ''."""
    close = difflib.get_close_matches(str(name), list(known), n=n)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _one_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines()]
    return "; ".join(
        line for line in lines if line and not line.startswith("For further information")
    )


def keeps_gray(transforms: A.BaseCompose | A.BasicTransform | None) -> bool:
    """True when every transform works on a 1-channel image exactly as on each RGB channel."""
    if transforms is None:
        return True
    if isinstance(transforms, A.BaseCompose):
        return all(keeps_gray(t) for t in transforms.transforms)
    if isinstance(transforms, A.ImageOnlyTransform):
        return type(transforms).__name__ in GRAY_SAFE_PIXEL_TRANSFORMS
    return isinstance(transforms, A.DualTransform)


def apply_transforms(
    compose: A.Compose, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run a Compose from build_transforms on an image and its xyxy pixel boxes and labels.

    Same result as ``compose(image=..., bboxes=..., labels=...)`` for the same random state,
    at a fraction of the cost: albumentations' bbox processor spends about a millisecond per
    call on conversions and checks, as long as decoding a 640x640 grayscale JPEG. Here boxes
    are normalized once, carry their row index so labels follow them, and are clipped and
    filtered by the same rules (clip, drop invalid, min_visibility ...) whenever they move.
    """
    processor = compose.processors.get("bboxes")
    if processor is None or compose.p < 1.0 or compose.save_applied_params:
        out = compose(image=image, bboxes=boxes, labels=labels)
        return out["image"], _as_boxes(out["bboxes"]), np.asarray(out["labels"], dtype=np.int64)
    params = processor.params
    compose.py_random.random()  # Compose draws for its own p; keep the random stream identical
    height, width = image.shape[:2]
    rows = np.empty((len(boxes), 5), dtype=np.float64)
    rows[:, 0:4:2] = boxes[:, 0:4:2] / width
    rows[:, 1:4:2] = boxes[:, 1:4:2] / height
    rows[:, 4] = np.arange(len(boxes))
    inside = _inside(rows, height, width)
    if not inside:
        rows = _filter(rows, height, width, None)
    data: dict[str, Any] = {"image": image, "bboxes": rows}
    # albumentations filters after every transform and once more at the end. A filter on boxes
    # it has just filtered only drops those left without area, and a third changes nothing:
    # `state` counts the filters since the boxes last moved (0, 1, 2 = settled).
    lenient = _lenient(params)
    state = 2 if inside and lenient else 0
    untouched = state == 2  # settled and still the boxes as given, in the same order
    each = params.check_each_transform
    for transform in compose.transforms:
        before, shape = data["bboxes"], data["image"].shape[:2]
        data = transform(**data)
        moved = data["bboxes"] is not before or data["image"].shape[:2] != shape
        if moved:
            untouched = False
            if not (state == 2 and lenient and isinstance(transform, _SYMMETRIES)):
                state = 0
        if each:
            data["bboxes"], state = _settle(
                np.asarray(data["bboxes"]), state, data["image"], params
            )
    if untouched:
        return data["image"], _as_boxes(boxes), np.asarray(labels, dtype=np.int64)
    rows = np.asarray(data["bboxes"])
    # The final filter; settling fully also drops boxes clipped to zero width, which
    # albumentations would reject with an error when check_each_transform is off.
    while state < 2:
        rows, state = _settle(rows, state, data["image"], params)
    out_height, out_width = data["image"].shape[:2]
    xyxy = (rows[:, :4] * [out_width, out_height, out_width, out_height]).astype(np.float32)
    return data["image"], xyxy, np.asarray(labels)[rows[:, 4].astype(np.int64)].astype(np.int64)


def _settle(
    rows: np.ndarray, state: int, image: np.ndarray, params: A.BboxParams
) -> tuple[np.ndarray, int]:
    """One more albumentations filter on boxes that have had ``state`` filters since they moved."""
    rows = rows.reshape(-1, 5)
    if state == 0:
        if _lenient(params) and _inside(rows, *image.shape[:2]):
            # Both filters keep every box that lies inside the image with an area (a flip's
            # result, say): checking that is a third of the work of filtering.
            return rows, 2
        return _filter(rows, *image.shape[:2], params), 1
    if state == 1 and len(rows):
        # Boxes are inside the image now: only their area and visibility can still fail.
        height, width = image.shape[:2]
        area = ((rows[:, 2:4] - rows[:, 0:2]) * (width, height)).prod(axis=1)
        keep = (area >= 1e-7) & (area / (area + 1e-7) >= params.min_visibility)
        return rows[keep], 2
    return rows, 2


def _lenient(params: A.BboxParams) -> bool:
    """True when the filters drop only boxes without area (no minimum size or visibility)."""
    return (
        params.min_visibility <= 0.0
        and params.min_area <= 0.0
        and params.min_width <= 0.0
        and params.min_height <= 0.0
        and params.max_accept_ratio is None
    )


def _inside(rows: np.ndarray, height: int, width: int) -> bool:
    """True when every box lies inside the image with an area, as the dataset delivers them."""
    if not len(rows):
        return True
    corners = rows[:, :4]
    if corners.min() < 0.0 or corners.max() > 1.0:
        return False
    size = corners[:, 2:4] - corners[:, 0:2]
    return bool((size[:, 0] * width * (size[:, 1] * height)).min() >= 1e-7)


def _filter(rows: np.ndarray, height: int, width: int, params: A.BboxParams | None) -> np.ndarray:
    """Clip normalized boxes to the image and drop those albumentations' filter_bboxes drops."""
    rows = rows.reshape(-1, 5)
    if not len(rows):
        return rows
    eps = 1e-7
    scale = np.array([width, height], dtype=np.float64)
    size = (rows[:, 2:4] - rows[:, 0:2]) * scale  # width, height in pixels
    clipped = np.clip(rows[:, :4], 0.0, 1.0)
    clipped_size = (clipped[:, 2:4] - clipped[:, 0:2]) * scale
    if params is None:  # before the transforms: clip, then drop boxes without area
        keep = (clipped_size > 0).all(axis=1)
    else:
        area = size[:, 0] * size[:, 1]
        clipped_area = clipped_size[:, 0] * clipped_size[:, 1]
        keep = (
            (area >= eps)
            & (clipped_area >= params.min_area - eps)
            & (clipped_area / (area + eps) >= params.min_visibility)
            & (clipped_size[:, 0] >= params.min_width - eps)
            & (clipped_size[:, 1] >= params.min_height - eps)
        )
        if params.max_accept_ratio is not None:
            w, h = clipped_size[:, 0], clipped_size[:, 1]
            keep &= np.maximum(w / (h + eps), h / (w + eps)) <= params.max_accept_ratio
    out = rows[keep]  # boolean indexing copies
    out[:, :4] = clipped[keep]
    return out


def _as_boxes(boxes: Any) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
