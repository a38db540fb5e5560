"""Operating point: TP/FP/FN, precision, recall and F1 at a score threshold; threshold choice."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detection.core.thresholds import Thresholds
from detection.evaluation.inputs import GroundTruth
from detection.evaluation.matching import Matches

# Recall is a ratio of small integers; allow for the rounding of the target itself.
_RECALL_EPS = 1e-12


@dataclass(frozen=True)
class ClassCurve:
    """Precision, recall and F1 of one class at each distinct detection score (descending).

    Point i counts every detection with score >= ``thresholds[i]``. Detections matched to a
    crowd region are left out, as COCO ignores them.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    num_gt: int

    @property
    def precision(self) -> np.ndarray:
        """TP / (TP + FP) at each threshold."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> np.ndarray:
        """TP / number of (non-crowd) ground truths at each threshold."""
        return _ratio(self.tp, np.full_like(self.tp, self.num_gt))

    @property
    def f1(self) -> np.ndarray:
        """2 TP / (2 TP + FP + FN) at each threshold."""
        return _ratio(2 * self.tp, self.tp + self.fp + self.num_gt)


@dataclass(frozen=True)
class OperatingPoint:
    """The ``operating_point`` report section plus the curves the plots draw."""

    report: dict
    curves: dict[str, ClassCurve]
    thresholds: dict[str, float]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (no detections: precision 0, as scikit-learn does)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


def counts(tp: int, fp: int, fn: int) -> dict:
    """TP/FP/FN with precision, recall and F1 (0 where undefined)."""
    return {
        "tp": int(tp),
        "fp": int(fp),
        "fn": int(fn),
        "precision": float(_ratio(tp, tp + fp)),
        "recall": float(_ratio(tp, tp + fn)),
        "f1": float(_ratio(2 * tp, 2 * tp + fp + fn)),
    }


def class_curve(scores: np.ndarray, true_positive: np.ndarray, num_gt: int) -> ClassCurve:
    """Cumulative TP/FP at each distinct score of one class's (non-ignored) detections."""
    order = np.argsort(-scores, kind="stable")
    scores = scores[order]
    tp = np.cumsum(true_positive[order], dtype=np.int64)
    fp = np.arange(1, len(scores) + 1, dtype=np.int64) - tp
    # Keep the last detection of each run of equal scores: a threshold admits all or none.
    last = np.flatnonzero(np.r_[scores[1:] != scores[:-1], True]) if len(scores) else []
    return ClassCurve(scores[last], tp[last], fp[last], int(num_gt))


def best_f1_threshold(curve: ClassCurve) -> tuple[float | None, float]:
    """The threshold with the highest F1 and that F1; on ties the lowest such threshold.

    Ties go to the lower threshold because in inspection a missed defect usually costs more
    than a false reject. None when no threshold yields a true positive.
    """
    f1 = curve.f1
    if len(f1) == 0 or f1.max() <= 0:
        return None, 0.0
    best = int(np.flatnonzero(f1 == f1.max())[-1])
    return float(curve.thresholds[best]), float(f1[best])


def target_recall_threshold(curve: ClassCurve, target_recall: float | None) -> float | None:
    """The highest threshold whose recall reaches ``target_recall``, or None if none does.

    Lowering the threshold further only adds detections, so this is the threshold that
    reaches the target with the fewest false positives.
    """
    if target_recall is None or curve.num_gt == 0:
        return None
    reached = np.flatnonzero(curve.recall >= target_recall - _RECALL_EPS)
    return float(curve.thresholds[reached[0]]) if len(reached) else None


def compute_operating_point(
    gt: GroundTruth,
    detections: list[dict],
    matches: Matches,
    thresholds: Thresholds,
    *,
    iou_threshold: float,
    target_recall: float | None = None,
) -> OperatingPoint:
    """Per-class and overall TP/FP/FN, P/R/F1 at ``thresholds``; best-F1 and target-recall thresholds."""
    names = gt.category_names
    score_threshold = thresholds.report_value()
    thresholds = thresholds.resolve(gt.class_names)
    class_index = {cat_id: k for k, cat_id in enumerate(names)}
    det_class = np.array([class_index[d["category_id"]] for d in detections], dtype=np.int64)
    det_score = np.array([d["score"] for d in detections], dtype=np.float64)
    keep = ~matches.ignored
    num_gt = np.zeros(len(names), dtype=np.int64)
    for ann in gt.dataset["annotations"]:
        if not ann["iscrowd"]:
            num_gt[class_index[ann["category_id"]]] += 1

    per_class = {}
    curves = {}
    total_tp = total_fp = total_fn = 0
    for k, name in enumerate(names.values()):
        mine = keep & (det_class == k)
        curve = class_curve(det_score[mine], matches.true_positive[mine], int(num_gt[k]))
        curves[name] = curve
        passed = det_score[mine] >= thresholds[name]
        tp = int(np.count_nonzero(matches.true_positive[mine] & passed))
        fp = int(np.count_nonzero(passed)) - tp
        fn = int(num_gt[k]) - tp
        best_threshold, best_f1 = best_f1_threshold(curve)
        per_class[name] = {
            **counts(tp, fp, fn),
            "threshold": thresholds[name],
            "best_f1_threshold": best_threshold,
            "best_f1": best_f1,
            "target_recall_threshold": target_recall_threshold(curve, target_recall),
        }
        total_tp, total_fp, total_fn = total_tp + tp, total_fp + fp, total_fn + fn

    report = {
        "iou_threshold": float(iou_threshold),
        "score_threshold": score_threshold,
        "target_recall": None if target_recall is None else float(target_recall),
        "overall": counts(total_tp, total_fp, total_fn),
        "per_class": per_class,
    }
    return OperatingPoint(report, curves, dict(thresholds))


def calibrate(operating_point: OperatingPoint, thresholds: Thresholds) -> Thresholds:
    """Best-F1 threshold per class; the default of ``thresholds`` for a class with no true
    positive to tune on."""
    best = {
        name: stats["best_f1_threshold"]
        for name, stats in operating_point.report["per_class"].items()
    }
    return Thresholds(
        thresholds.default,
        {name: thresholds.fallback if value is None else value for name, value in best.items()},
    )
