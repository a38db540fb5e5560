"""The full evaluation report, and DetectionEvaluator (reset/process/evaluate, DDP-aware)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch.distributed as dist

from detection.core.errors import InvalidInputError
from detection.core.thresholds import DECISION_DEFAULT, Thresholds, ThresholdsLike
from detection.evaluation.coco import (
    check_area_ranges,
    check_backend,
    check_max_dets,
    coco_metrics,
    paused_gc,
)
from detection.evaluation.image_level import image_level_report
from detection.evaluation.inputs import (
    GroundTruth,
    load_ground_truth,
    load_predictions,
    restrict_to_images,
)
from detection.evaluation.matching import match_detections
from detection.evaluation.operating_point import ClassCurve, calibrate, compute_operating_point

COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


@dataclass(frozen=True)
class Evaluation:
    """A report (the metrics.json structure), the per-class curves and the detections behind it
    (COCO result records, each with the ``id``, ``area`` and ``iscrowd`` COCO evaluation adds)."""

    report: dict
    curves: dict[str, ClassCurve]
    detections: list[dict] = field(default_factory=list)


def _check_unit_interval(name: str, value: float | None, allow_zero: bool) -> None:
    if value is None:
        return
    ok = (0 <= value <= 1) if allow_zero else (0 < value <= 1)
    if not np.isfinite(value) or not ok:
        raise ValueError(f"{name} must be in {'[0' if allow_zero else '(0'}, 1], got {value}")


def evaluate_detections(
    gt: dict | str | Path | GroundTruth,
    predictions: Sequence[dict] | str | Path,
    *,
    backend: str = "faster",
    area_ranges: Mapping[str, Sequence[float]] | None = None,
    max_dets: Sequence[int] = (1, 10, 100),
    iou_threshold: float = 0.5,
    score_threshold: ThresholdsLike = DECISION_DEFAULT,
    target_recall: float | None = None,
    image_ids: Iterable[int] | None = None,
) -> Evaluation:
    """COCO metrics, operating point, image level and calibrated thresholds in one report.

    ``score_threshold`` is one value for every class, {class_name: value} or a `Thresholds`;
    its default serves classes without a value of their own, and is the calibrated threshold
    of a class without a true positive to tune on.
    """
    thresholds = Thresholds.coerce(score_threshold)
    check_backend(backend)
    ranges = check_area_ranges(area_ranges)
    dets = check_max_dets(max_dets)
    _check_unit_interval("iou_threshold", iou_threshold, allow_zero=False)
    _check_unit_interval("target_recall", target_recall, allow_zero=False)
    with paused_gc():
        ground_truth = load_ground_truth(gt)
        if image_ids is not None:
            ground_truth = restrict_to_images(ground_truth, image_ids)
        per_class = thresholds.resolve(ground_truth.class_names)
        detections = load_predictions(predictions, ground_truth)

        report: dict[str, Any] = coco_metrics(
            backend,
            ground_truth,
            detections,
            thresholds=COCO_IOU_THRESHOLDS,
            area_ranges=ranges,
            max_dets=dets,
        )
        matches = match_detections(ground_truth, detections, iou_threshold, backend)
        operating_point = compute_operating_point(
            ground_truth,
            detections,
            matches,
            thresholds,
            iou_threshold=iou_threshold,
            target_recall=target_recall,
        )
        report["operating_point"] = operating_point.report
        report["image_level"] = image_level_report(
            ground_truth, detections, matches, per_class, iou_threshold
        )
        report["calibrated_thresholds"] = dict(calibrate(operating_point, thresholds).per_class)
        report["settings"] = {
            "backend": backend,
            "area_ranges": ranges,
            "max_dets": dets,
            "images": len(ground_truth.image_ids),
            "detections": len(detections),
            "ground_truth": ground_truth.source,
        }
        return Evaluation(report, operating_point.curves, detections)


def _world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class DetectionEvaluator:
    """Collects one image's detections at a time; ``evaluate()`` returns the full report.

    The Detectron2 ``DatasetEvaluator`` protocol: ``reset()``, ``process(image_id, dets)``
    per image, ``evaluate()``. Only processed images are evaluated (so a partial validation
    pass is scored on what it saw). Under torch.distributed every rank's records are
    gathered and de-duplicated by image id, since DistributedSampler pads its shards with
    repeated images; all ranks then compute and return the same report. ``evaluate()`` is
    then a collective call: every rank must make it.
    """

    def __init__(
        self,
        gt: dict | str | Path | GroundTruth,
        *,
        backend: str = "faster",
        area_ranges: Mapping[str, Sequence[float]] | None = None,
        iou_threshold: float = 0.5,
        score_threshold: ThresholdsLike = DECISION_DEFAULT,
        target_recall: float | None = None,
    ) -> None:
        self.gt = load_ground_truth(gt)
        self.backend = check_backend(backend)
        self.area_ranges = check_area_ranges(area_ranges)
        _check_unit_interval("iou_threshold", iou_threshold, allow_zero=False)
        _check_unit_interval("target_recall", target_recall, allow_zero=False)
        self.iou_threshold = iou_threshold
        self.thresholds = Thresholds.coerce(score_threshold)
        # Fail at construction, not after a whole validation epoch.
        self.thresholds.resolve(self.gt.class_names)
        self.target_recall = target_recall
        self._records: dict[int, list[dict]] = {}
        self._known_images = set(self.gt.image_ids)

    def reset(self) -> None:
        """Forget every processed image."""
        self._records = {}

    def process(self, image_id: int, detections: Iterable[dict]) -> None:
        """Record one image's COCO result dicts (an empty list still counts the image)."""
        image_id = int(image_id)
        if image_id not in self._known_images:
            raise InvalidInputError(
                self.gt.source, f"unknown image id {image_id} passed to process()", field="image_id"
            )
        records = []
        for det in detections:
            det = dict(det)
            det.setdefault("image_id", image_id)
            if det["image_id"] != image_id:
                raise ValueError(
                    f"detection for image {det['image_id']} passed to process() for image {image_id}"
                )
            records.append(det)
        # A repeated image (sampler padding) keeps its first result, as after gathering.
        self._records.setdefault(image_id, records)

    def _gathered(self) -> dict[int, list[dict]]:
        if _world_size() == 1:
            return self._records
        shards: list[Any] = [None] * _world_size()
        dist.all_gather_object(shards, list(self._records.items()))
        merged: dict[int, list[dict]] = {}
        for shard in shards:
            for image_id, records in shard:
                merged.setdefault(image_id, records)
        return merged

    def evaluate(self) -> dict:
        """The report over all processed images (on every rank); see :func:`evaluate_detections`."""
        return self.evaluation().report

    def evaluation(self) -> Evaluation:
        """Like `evaluate`, with the per-class curves the plots draw."""
        records = self._gathered()
        # Sorted by image id so the result list, and hence tie order, is rank-independent.
        image_ids = sorted(records)
        predictions = [det for image_id in image_ids for det in records[image_id]]
        return evaluate_detections(
            self.gt,
            predictions,
            backend=self.backend,
            area_ranges=self.area_ranges,
            iou_threshold=self.iou_threshold,
            score_threshold=self.thresholds,
            target_recall=self.target_recall,
            image_ids=image_ids,
        )
