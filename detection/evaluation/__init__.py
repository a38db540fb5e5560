"""Evaluation: COCO metrics, operating point, image-level pass/fail, reports and plots."""

from detection.evaluation.coco import METRIC_KEYS, evaluate_coco
from detection.evaluation.evaluator import DetectionEvaluator, Evaluation, evaluate_detections

__all__ = [
    "METRIC_KEYS",
    "DetectionEvaluator",
    "Evaluation",
    "evaluate_coco",
    "evaluate_detections",
]
