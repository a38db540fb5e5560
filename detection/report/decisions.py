"""The pass/fail rules the page recomputes when a threshold moves, in Python.

The page (static/report.js, `failsAt`) applies exactly these rules, and the tests compare the
two: a detection is a defect when its score is at least its class's threshold (`>=`, as the
Detector decides); an image fails when any of its detections is a defect. At a class's own job
threshold the job's stored decision is kept ("fail" in the record): the job compared unrounded
float32 scores, the record keeps them rounded to 5 decimals, and the counts at the job's
thresholds must equal summary.json.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from detection.core.thresholds import Thresholds, ThresholdsLike


def detection_fails(
    det: Mapping[str, Any], thresholds: Mapping[str, float], job: Mapping[str, float]
) -> bool:
    """Whether one stored detection fails the part at ``thresholds`` (class -> value)."""
    name = det["class_name"]
    if thresholds[name] == job[name]:
        return bool(det["fail"])
    return float(det["score"]) >= thresholds[name]


def image_fails(
    record: Mapping[str, Any], thresholds: Mapping[str, float], job: Mapping[str, float]
) -> bool:
    """Whether a result record's image fails at ``thresholds``."""
    return any(detection_fails(d, thresholds, job) for d in record["detections"])


def resolve(value: ThresholdsLike, class_names: Sequence[str]) -> dict[str, float]:
    """One threshold per class from anything `Thresholds.coerce` takes (a number, a mapping,
    command-line strings): the resolution every command uses."""
    return Thresholds.coerce(value).resolve(class_names)


def counts_at(
    records: Sequence[Mapping[str, Any]],
    value: ThresholdsLike,
    job: Mapping[str, float],
) -> dict[str, int]:
    """Passed and failed images, and failed images per class, at the thresholds ``value``.

    Classes ``value`` does not name keep the job's threshold: the page starts from those.
    """
    thresholds = Thresholds(None, dict(job)).updated(value).resolve(list(job))
    failed_by_class = dict.fromkeys(job, 0)
    failed = 0
    for record in records:
        classes = {
            d["class_name"] for d in record["detections"] if detection_fails(d, thresholds, job)
        }
        failed += bool(classes)
        for name in classes:
            failed_by_class[name] += 1
    return {"passed": len(records) - failed, "failed": failed, "by_class": failed_by_class}


def is_borderline(
    record: Mapping[str, Any],
    thresholds: Mapping[str, float],
    job: Mapping[str, float],
    band: float,
) -> bool:
    """A passing image with a detection within ``band`` under its class threshold."""
    if image_fails(record, thresholds, job):
        return False
    return any(
        float(d["score"]) >= thresholds[d["class_name"]] - band for d in record["detections"]
    )
