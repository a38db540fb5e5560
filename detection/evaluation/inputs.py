"""Load and validate COCO ground truth and detection results for evaluation."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detection.core.coco_format import (
    EVALUATION_RULES,
    box_problem,
    is_int,
    is_number,
    raise_first,
    read_json,
    validate,
)
from detection.core.errors import InvalidInputError

PREDICTION_FIELDS = ("image_id", "category_id", "bbox", "score")


@dataclass(frozen=True)
class GroundTruth:
    """A validated COCO ground truth, normalised for the evaluators.

    ``dataset`` is a fresh COCO dict holding only what box evaluation reads. Annotation ids
    are renumbered 1..N (position + 1) because both COCO evaluators use id 0 as "unmatched"
    (a gt with id 0 would silently count its match as a false positive); missing ``area``
    becomes the box area and missing ``iscrowd`` becomes 0.
    """

    dataset: dict
    source: str
    category_names: dict[int, str]
    image_ids: list[int]
    # (width, height) of the images whose record gives both: results are checked against them
    image_sizes: dict[int, tuple[float, float]] = dataclasses.field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        """Class names in category-id order."""
        return list(self.category_names.values())


def _check_box(box: Any, source: str, record: str) -> list[float]:
    """Validate an ``[x, y, w, h]`` result box and return it as floats."""
    problem = box_problem(box, positive=False)
    if problem is not None:
        raise InvalidInputError(source, problem[1], record=record, field="bbox")
    return [float(v) for v in box]


def load_ground_truth(gt: dict | str | Path | GroundTruth) -> GroundTruth:
    """Validate a COCO ground-truth dict or json file and normalise it for evaluation."""
    if isinstance(gt, GroundTruth):
        return gt
    source = str(gt) if isinstance(gt, (str, Path)) else "ground truth"
    data = read_json(gt) if isinstance(gt, (str, Path)) else gt
    raise_first(validate(data, EVALUATION_RULES), source)
    category_names = dict(
        sorted((int(cat["id"]), str(cat.get("name", cat["id"]))) for cat in data["categories"])
    )
    image_ids = sorted(int(img["id"]) for img in data["images"])
    image_sizes = {
        int(img["id"]): (float(img["width"]), float(img["height"]))
        for img in data["images"]
        if is_number(img.get("width")) and is_number(img.get("height"))
    }
    annotations = [
        {
            "id": i + 1,
            "image_id": int(ann["image_id"]),
            "category_id": int(ann["category_id"]),
            "bbox": [float(v) for v in ann["bbox"]],
            "area": float(ann.get("area", ann["bbox"][2] * ann["bbox"][3])),
            "iscrowd": 1 if ann.get("iscrowd", 0) else 0,
        }
        for i, ann in enumerate(data["annotations"])
    ]
    dataset = {
        "images": [{"id": image_id} for image_id in image_ids],
        "annotations": annotations,
        "categories": [{"id": k, "name": v} for k, v in category_names.items()],
    }
    return GroundTruth(dataset, source, category_names, image_ids, image_sizes)


def load_predictions(predictions: Sequence[dict] | str | Path, gt: GroundTruth) -> list[dict]:
    """Validate COCO result records against ``gt``; return fresh dicts ready for COCO eval.

    Each returned record gets ``id`` = position + 1 (as COCO ``loadRes`` assigns), ``area`` =
    box area and ``iscrowd`` = 0, so both backends see exactly what ``loadRes`` would build.
    """
    source = str(predictions) if isinstance(predictions, (str, Path)) else "predictions"
    records = read_json(predictions) if isinstance(predictions, (str, Path)) else predictions
    if not isinstance(records, (list, tuple)):
        raise InvalidInputError(source, "must be a list of COCO result records")
    known_images = set(gt.image_ids)
    columns = _columns(records, known_images, gt.category_names)
    if columns is None:
        # Something is unusual: the record-by-record check names the first bad record, or
        # normalises valid values the column check does not take (e.g. numpy int16 ids).
        rows = [
            _check_record(r, f"record {i}", source, known_images, gt) for i, r in enumerate(records)
        ]
        columns = (
            [row[0] for row in rows],
            [row[1] for row in rows],
            np.array([row[2] for row in rows], dtype=np.float64).reshape(-1, 4),
            np.array([row[3] for row in rows], dtype=np.float64),
        )
    image_col, category_col, boxes, scores = columns
    _warn_if_xyxy(source, image_col, boxes, gt.image_sizes)
    areas = (boxes[:, 2] * boxes[:, 3]).tolist()
    return [
        {
            "id": i + 1,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": box,
            "score": score,
            "area": area,
            "iscrowd": 0,
        }
        for i, (image_id, category_id, box, score, area) in enumerate(
            zip(image_col, category_col, boxes.tolist(), scores.tolist(), areas, strict=True)
        )
    ]


_INT_TYPES = {int, np.int64, np.int32}
XYXY_SHARE = 0.5  # results whose boxes mostly look like [x1, y1, x2, y2] get a warning


class ResultsFormatWarning(UserWarning):
    """Result boxes that look like ``[x1, y1, x2, y2]`` where COCO wants ``[x, y, w, h]``."""


def _warn_if_xyxy(
    source: str, image_ids: list[int], boxes: np.ndarray, sizes: Mapping[int, tuple[float, float]]
) -> None:
    """Warn, with the count, when most boxes reach past their image's right or bottom edge
    while every "w" is at least x and every "h" at least y: what xyxy boxes read as xywh do."""
    known = [i for i, image_id in enumerate(image_ids) if image_id in sizes]
    if not known:
        return
    wh = np.array([sizes[image_ids[i]] for i in known], dtype=np.float64)
    x, y, w, h = boxes[known].T
    past = (x + w > wh[:, 0] + 1.0) | (y + h > wh[:, 1] + 1.0)
    if past.mean() > XYXY_SHARE and (w >= x).all() and (h >= y).all():
        warnings.warn(
            f"{source}: {int(past.sum())} of {len(known)} boxes reach past their image's edge "
            "and every w >= x, h >= y: these look like [x1, y1, x2, y2] boxes; COCO results "
            "are [x, y, width, height]",
            ResultsFormatWarning,
            stacklevel=3,
        )


def _columns(
    records: Sequence[Any], known_images: set[int], known_categories: Mapping[int, str]
) -> tuple[list[int], list[int], np.ndarray, np.ndarray] | None:
    """Fields of all records as columns, or None if any record is invalid.

    A per-record Python check costs more than the COCO evaluation itself on large result
    sets, so the common all-valid case is checked column-wise.
    """
    if not records:
        return [], [], np.zeros((0, 4)), np.zeros(0)
    try:
        image_col = [r["image_id"] for r in records]
        category_col = [r["category_id"] for r in records]
        box_col = [r["bbox"] for r in records]
        score_col = [r["score"] for r in records]
    except (KeyError, TypeError):
        return None
    if (
        not set(map(type, image_col)) <= _INT_TYPES
        or not set(map(type, category_col)) <= _INT_TYPES
    ):
        return None
    try:
        boxes = np.asarray(box_col)
        scores = np.asarray(score_col)
    except ValueError:  # ragged boxes
        return None
    if (
        boxes.ndim != 2
        or boxes.shape[1] != 4
        or boxes.dtype.kind not in "iuf"
        or scores.ndim != 1
        or scores.dtype.kind not in "iuf"
    ):
        return None
    boxes = boxes.astype(np.float64)
    scores = scores.astype(np.float64)
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        return None
    if (boxes[:, 2:] < 0).any():
        return None
    if not set(image_col) <= known_images or not set(category_col) <= known_categories.keys():
        return None
    return [int(v) for v in image_col], [int(v) for v in category_col], boxes, scores


def _check_record(
    rec: Any, record: str, source: str, known_images: set[int], gt: GroundTruth
) -> tuple[int, int, list[float], float]:
    """(image_id, category_id, box, score) of one prediction; InvalidInputError if invalid."""
    if not isinstance(rec, dict):
        raise InvalidInputError(source, "must be an object", record=record)
    for field in PREDICTION_FIELDS:
        if field not in rec:
            raise InvalidInputError(source, "missing", record=record, field=field)
    image_id = rec["image_id"]
    if not is_int(image_id) or int(image_id) not in known_images:
        raise InvalidInputError(
            source,
            f"unknown image id {image_id!r} (not in {gt.source})",
            record=record,
            field="image_id",
        )
    category_id = rec["category_id"]
    if not is_int(category_id) or int(category_id) not in gt.category_names:
        raise InvalidInputError(
            source,
            f"unknown category id {category_id!r} (not in {gt.source})",
            record=record,
            field="category_id",
        )
    score = rec["score"]
    if not is_number(score) or not math.isfinite(float(score)):
        raise InvalidInputError(
            source, f"must be a finite number, got {score!r}", record=record, field="score"
        )
    return int(image_id), int(category_id), _check_box(rec["bbox"], source, record), float(score)


def restrict_to_images(gt: GroundTruth, image_ids: Iterable[int]) -> GroundTruth:
    """The same ground truth limited to ``image_ids`` (which must all be in ``gt``)."""
    keep = set(image_ids)
    unknown = keep - set(gt.image_ids)
    if unknown:
        raise InvalidInputError(
            gt.source, f"unknown image id {min(unknown)}", field="image_id", record="image_ids"
        )
    annotations = [a for a in gt.dataset["annotations"] if a["image_id"] in keep]
    dataset = {
        "images": [img for img in gt.dataset["images"] if img["id"] in keep],
        # Keep ids equal to position + 1, which the matching code relies on.
        "annotations": [{**a, "id": i + 1} for i, a in enumerate(annotations)],
        "categories": gt.dataset["categories"],
    }
    sizes = {k: v for k, v in gt.image_sizes.items() if k in keep}
    return GroundTruth(dataset, gt.source, gt.category_names, sorted(keep), sizes)
