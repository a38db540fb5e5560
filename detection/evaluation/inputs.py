"""Load and validate COCO ground truth and detection results for evaluation."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detection.errors import InvalidInputError

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

    @property
    def class_names(self) -> list[str]:
        """Class names in category-id order."""
        return list(self.category_names.values())


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; unreadable or malformed files raise InvalidInputError."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InvalidInputError(path, "file not found") from None
    except IsADirectoryError:
        raise InvalidInputError(path, "is a directory, not a JSON file") from None
    except json.JSONDecodeError as error:
        raise InvalidInputError(path, f"not valid JSON ({error})") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(path, f"cannot read the file ({error})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _check_box(box: Any, source: str, record: str) -> list[float]:
    """Validate an ``[x, y, w, h]`` box and return it as floats."""
    if not isinstance(box, (list, tuple, np.ndarray)) or len(box) != 4:
        raise InvalidInputError(source, "must be a list [x, y, w, h]", record=record, field="bbox")
    if not all(_is_number(v) for v in box):
        raise InvalidInputError(source, "values must be numbers", record=record, field="bbox")
    x, y, w, h = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise InvalidInputError(source, "values must be finite", record=record, field="bbox")
    if w < 0 or h < 0:
        raise InvalidInputError(
            source, f"negative width or height ({w:g} x {h:g})", record=record, field="bbox"
        )
    return [x, y, w, h]


def load_ground_truth(gt: dict | str | Path | GroundTruth) -> GroundTruth:
    """Validate a COCO ground-truth dict or json file and normalise it for evaluation."""
    if isinstance(gt, GroundTruth):
        return gt
    source = str(gt) if isinstance(gt, (str, Path)) else "ground truth"
    data = read_json(gt) if isinstance(gt, (str, Path)) else gt
    if not isinstance(data, dict):
        raise InvalidInputError(source, "must be a COCO object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InvalidInputError(source, f"missing or not a list: '{key}'")

    categories: dict[int, str] = {}
    names: set[str] = set()
    for i, cat in enumerate(data["categories"]):
        record = f"categories[{i}]"
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise InvalidInputError(source, "missing or not an integer", record=record, field="id")
        name = str(cat.get("name", cat["id"]))
        if int(cat["id"]) in categories or name in names:
            raise InvalidInputError(source, "duplicate category id or name", record=record)
        categories[int(cat["id"])] = name
        names.add(name)
    category_names = dict(sorted(categories.items()))

    images = []
    seen_images: set[int] = set()
    for i, img in enumerate(data["images"]):
        record = f"images[{i}]"
        if not isinstance(img, dict) or not _is_int(img.get("id")):
            raise InvalidInputError(source, "missing or not an integer", record=record, field="id")
        if int(img["id"]) in seen_images:
            raise InvalidInputError(source, f"duplicate image id {img['id']}", record=record)
        seen_images.add(int(img["id"]))
        images.append({"id": int(img["id"])})

    annotations = []
    for i, ann in enumerate(data["annotations"]):
        record = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise InvalidInputError(source, "must be an object", record=record)
        image_id = ann.get("image_id")
        if not _is_int(image_id) or int(image_id) not in seen_images:
            raise InvalidInputError(
                source, f"unknown image id {image_id!r}", record=record, field="image_id"
            )
        category_id = ann.get("category_id")
        if not _is_int(category_id) or int(category_id) not in categories:
            raise InvalidInputError(
                source, f"unknown category id {category_id!r}", record=record, field="category_id"
            )
        box = _check_box(ann.get("bbox"), source, record)
        area = ann.get("area", box[2] * box[3])
        if not _is_number(area) or not math.isfinite(float(area)) or float(area) < 0:
            raise InvalidInputError(
                source, "must be a finite number >= 0", record=record, field="area"
            )
        annotations.append(
            {
                "id": i + 1,
                "image_id": int(image_id),
                "category_id": int(category_id),
                "bbox": box,
                "area": float(area),
                "iscrowd": 1 if ann.get("iscrowd", 0) else 0,
            }
        )

    dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k, "name": v} for k, v in category_names.items()],
    }
    return GroundTruth(dataset, source, category_names, sorted(seen_images))


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
    if not _is_int(image_id) or int(image_id) not in known_images:
        raise InvalidInputError(
            source,
            f"unknown image id {image_id!r} (not in {gt.source})",
            record=record,
            field="image_id",
        )
    category_id = rec["category_id"]
    if not _is_int(category_id) or int(category_id) not in gt.category_names:
        raise InvalidInputError(
            source,
            f"unknown category id {category_id!r} (not in {gt.source})",
            record=record,
            field="category_id",
        )
    score = rec["score"]
    if not _is_number(score) or not math.isfinite(float(score)):
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
    return GroundTruth(dataset, gt.source, gt.category_names, sorted(keep))
