"""Which images of an inspect job a person should look at: rules that combine, in priority order.

- ``failed``: the job failed the image (any defect);
- ``uncertain``: a detection scores within a band around its class threshold (this includes
  every image whose decision would flip if its thresholds moved inside the band);
- ``audit``: a seeded random sample of the passed images, to measure escapes (the fraction is
  kept so the report can estimate escapes for the whole lot);
- ``disagree``: the decision differs from a COCO ground truth (a defect box or not);
- ``listed``: images named explicitly.

An image chosen by several rules is listed once, under the first of them in the order given;
within a rule the most uncertain come first (audit: the seeded random order), and ``limit``
cuts from the end.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RULES = ("failed", "uncertain", "audit", "disagree", "listed")
DEFAULT_RULES = ("failed", "uncertain", "audit")


@dataclass(frozen=True)
class Chosen:
    """One chosen image record with the rules that chose it and its uncertainty (0..1)."""

    record: dict[str, Any]
    reasons: tuple[str, ...]
    uncertainty: float


def in_band(score: float, threshold: float, band: float) -> bool:
    """True when `score` lies within `band` of `threshold` (both ends included)."""
    return abs(score - threshold) <= band


def uncertainty(
    record: Mapping[str, Any], thresholds: Mapping[str, float], band: Mapping[str, float]
) -> float:
    """How close the image's decision is to flipping, 1 (on the threshold) .. 0 (a band away or
    more): the margin of its highest-scoring detection relative to its class's band."""
    closest = 0.0
    for det in record["detections"]:
        width = band[det["class_name"]]
        distance = abs(det["score"] - thresholds[det["class_name"]])
        if width > 0 and distance <= width:
            closest = max(closest, 1.0 - distance / width)
    return round(closest, 4)


def shown_detections(
    record: Mapping[str, Any], thresholds: Mapping[str, float], band: Mapping[str, float]
) -> list[dict[str, Any]]:
    """The detections a reviewer sees: defects and those within the band below their threshold."""
    return [
        det
        for det in record["detections"]
        if det["score"] >= thresholds[det["class_name"]] - band[det["class_name"]]
    ]


def audit_sample(records: Sequence[Mapping[str, Any]], fraction: float, seed: int) -> list[str]:
    """A seeded random sample of the passed images (their keys, in the sample's order).

    Raises:
        ValueError: `fraction` outside 0..1.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the audit fraction must lie in 0..1, got {fraction}")
    passed = sorted(r["image"] for r in records if r["decision"] == "pass")
    count = round(fraction * len(passed))
    if fraction > 0 and passed and count == 0:
        count = 1  # a fraction that rounds to nothing still audits one image
    return random.Random(seed).sample(passed, count)


def disagreements(
    records: Sequence[Mapping[str, Any]], defect_images: Mapping[str, bool]
) -> set[str]:
    """Images whose decision differs from the ground truth (`defect_images`: image -> has a
    defect box); images the ground truth does not know are left out."""
    return {
        r["image"]
        for r in records
        if r["image"] in defect_images and (r["decision"] == "fail") != defect_images[r["image"]]
    }


def select_images(
    records: Sequence[dict[str, Any]],
    thresholds: Mapping[str, float],
    band: Mapping[str, float],
    rules: Sequence[str] = DEFAULT_RULES,
    *,
    audit_fraction: float = 0.05,
    seed: int = 0,
    limit: int | None = None,
    defect_images: Mapping[str, bool] | None = None,
    listed: Collection[str] = (),
) -> list[Chosen]:
    """The images to review, in priority order.

    Args:
        records: the job's result records (one per image).
        thresholds, band: per class, the decision threshold and the half-width of its band.
        rules: names from RULES, highest priority first.
        audit_fraction, seed: the audit sample of passed images.
        limit: at most this many images (None: all chosen).
        defect_images: for ``disagree``: image -> whether the ground truth has a defect.
        listed: for ``listed``: the image keys named.

    Raises:
        ValueError: an unknown or repeated rule, ``disagree`` without a ground truth, a listed
            image the job does not hold, a negative limit.
    """
    unknown = [r for r in rules if r not in RULES]
    if unknown or len(set(rules)) != len(rules) or not rules:
        raise ValueError(f"rules must be distinct names of {list(RULES)}, got {list(rules)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    by_image = {r["image"]: r for r in records}
    audit = audit_sample(records, audit_fraction, seed) if "audit" in rules else []
    chosen_by_rule: dict[str, list[str]] = {
        "failed": [r["image"] for r in records if r["decision"] == "fail"],
        "uncertain": [r["image"] for r in records if uncertainty(r, thresholds, band) > 0],
        "audit": audit,
    }
    if "disagree" in rules:
        if defect_images is None:
            raise ValueError("the 'disagree' rule needs a COCO ground truth")
        chosen_by_rule["disagree"] = sorted(disagreements(records, defect_images))
    missing = sorted(set(listed) - set(by_image))
    if missing:
        raise ValueError(f"listed images are not in the inspect job: {missing[:3]}")
    chosen_by_rule["listed"] = sorted(listed)
    reasons: dict[str, list[str]] = {}
    order: list[str] = []
    for rule in rules:
        keys = chosen_by_rule[rule]
        if rule != "audit":  # the audit keeps its random order, so a limit cuts it at random
            keys = sorted(keys, key=lambda k: -uncertainty(by_image[k], thresholds, band))
        for key in keys:
            if key not in reasons:
                order.append(key)
                reasons[key] = []
            reasons[key].append(rule)
    if limit is not None:
        order = order[:limit]
    return [
        Chosen(by_image[k], tuple(reasons[k]), uncertainty(by_image[k], thresholds, band))
        for k in order
    ]
