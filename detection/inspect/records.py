"""What a sound line of a job's result and error files holds, and the one wording of a bad line.

A line counts as an image done only when it is sound: it parses as JSON and has every field the
summary, the report and a review export read, of the right type. Anything else (a line
garbled by a disk fault, hand-edited, cut by a copy) is reported and its image inspected again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DECISIONS = ("pass", "fail")


@dataclass(frozen=True)
class BadLine:
    """A complete line of a JSON Lines file that is not a sound record."""

    path: Path
    line: int  # 1-based
    problem: str

    def __str__(self) -> str:
        return f"{self.path} line {self.line}: {self.problem}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _detection_problem(det: Any) -> str | None:
    if not isinstance(det, dict):
        return "is not an object"
    bbox = det.get("bbox")
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)):
        return "field 'bbox' is not 4 numbers"
    if not _number(det.get("score")):
        return "field 'score' is not a number"
    for name in ("label", "category_id"):
        if not _count(det.get(name)):
            return f"field '{name}' is not a whole number"
    if not isinstance(det.get("class_name"), str):
        return "field 'class_name' is not a string"
    if not isinstance(det.get("fail"), bool):
        return "field 'fail' is not true/false"
    return None


def result_problem(record: Any) -> str | None:
    """Why `record` is not a sound result line (None when it is)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("image"), str):
        return "field 'image' is missing or not a string"
    for name in ("width", "height"):
        if not _count(record.get(name)):
            return f"field '{name}' is missing or not a whole number"
    if record.get("decision") not in DECISIONS:
        return "field 'decision' is not 'pass' or 'fail'"
    detections = record.get("detections")
    if not isinstance(detections, list):
        return "field 'detections' is missing or not a list"
    for i, det in enumerate(detections):
        problem = _detection_problem(det)
        if problem is not None:
            return f"detection {i} {problem}"
    return None


def error_problem(record: Any) -> str | None:
    """Why `record` is not a sound error line (None when it is)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("image"), str):
        return "field 'image' is missing or not a string"
    if not isinstance(record.get("error"), str):
        return "field 'error' is missing or not a string"
    return None
