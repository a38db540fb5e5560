"""Image-level pass/fail (escapes, false rejects) and the confusion matrix at an operating point."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import numpy as np
from pycocotools import mask as mask_utils

from detection.evaluation.inputs import GroundTruth
from detection.evaluation.matching import Matches

BACKGROUND = "background"


def _rate(num: int, den: int) -> float | None:
    """num / den, or None when there is nothing to take a rate of."""
    return num / den if den else None


def image_pass_fail(
    gt: GroundTruth, detections: list[dict], thresholds: Mapping[str, float]
) -> dict:
    """Count defective images caught and escaped, and defect-free images falsely rejected.

    An image fails when any detection reaches its class threshold. An image is defective
    when it has at least one non-crowd ground truth; crowd regions alone do not make a
    defect (COCO ignores them too).
    """
    names = gt.category_names
    defective = {a["image_id"] for a in gt.dataset["annotations"] if not a["iscrowd"]}
    failed = {
        d["image_id"] for d in detections if d["score"] >= thresholds[names[d["category_id"]]]
    }
    images = set(gt.image_ids)
    caught = len(defective & failed)
    defect_free = images - defective
    false_rejects = len(defect_free & failed)
    return {
        "images": len(images),
        "defective_images": len(defective),
        "defect_free_images": len(defect_free),
        "failed_images": len(failed),
        "defective_failed": caught,
        "escapes": len(defective) - caught,
        "false_rejects": false_rejects,
        "defective_recall": _rate(caught, len(defective)),
        "escape_rate": _rate(len(defective) - caught, len(defective)),
        "false_reject_rate": _rate(false_rejects, len(defect_free)),
    }


def confusion_matrix(
    gt: GroundTruth,
    detections: list[dict],
    matches: Matches,
    thresholds: Mapping[str, float],
    iou_threshold: float,
) -> np.ndarray:
    """(K+1)x(K+1) counts: rows are ground-truth classes, columns predicted classes, last = background.

    Only detections that reach their class threshold count. COCO's same-class matches fill the
    diagonal (so it equals the operating point's TP); then, per image, the remaining false
    positives take the remaining ground truths of any class at IoU >= ``iou_threshold``
    (greedy, highest score first, highest IoU) as class confusions. A detection still left
    is background-predicted-as-class (row K); a ground truth still left is a miss (column K).
    Detections matched to crowd regions are ignored, as in COCO.
    """
    names = gt.category_names
    class_index = {cat_id: k for k, cat_id in enumerate(names)}
    k_bg = len(names)
    matrix = np.zeros((k_bg + 1, k_bg + 1), dtype=np.int64)
    annotations = gt.dataset["annotations"]

    taken: set[int] = set()
    leftover_dets: dict[int, list[int]] = defaultdict(list)
    for i, det in enumerate(detections):
        if matches.ignored[i] or det["score"] < thresholds[names[det["category_id"]]]:
            continue
        if matches.gt_index[i] >= 0:
            taken.add(int(matches.gt_index[i]))
            k = class_index[det["category_id"]]
            matrix[k, k] += 1
        else:
            leftover_dets[det["image_id"]].append(i)
    leftover_gts: dict[int, list[int]] = defaultdict(list)
    for j, ann in enumerate(annotations):
        if not ann["iscrowd"] and j not in taken:
            leftover_gts[ann["image_id"]].append(j)

    for image_id in gt.image_ids:
        dets = sorted(leftover_dets.get(image_id, []), key=lambda i: -detections[i]["score"])
        gts = leftover_gts.get(image_id, [])
        free = np.ones(len(gts), dtype=bool)
        if dets and gts:
            ious = np.asarray(
                mask_utils.iou(
                    [detections[i]["bbox"] for i in dets],
                    [annotations[j]["bbox"] for j in gts],
                    [0] * len(gts),
                )
            )
        for row, i in enumerate(dets):
            predicted = class_index[detections[i]["category_id"]]
            best = -1
            if gts:
                candidates = np.where(free & (ious[row] >= iou_threshold), ious[row], -1.0)
                if candidates.max() >= 0:
                    best = int(np.argmax(candidates))
            if best < 0:
                matrix[k_bg, predicted] += 1
            else:
                free[best] = False
                matrix[class_index[annotations[gts[best]]["category_id"]], predicted] += 1
        for col, j in enumerate(gts):
            if free[col]:
                matrix[class_index[annotations[j]["category_id"]], k_bg] += 1
    return matrix


def image_level_report(
    gt: GroundTruth,
    detections: list[dict],
    matches: Matches,
    thresholds: Mapping[str, float],
    iou_threshold: float,
) -> dict:
    """The ``image_level`` report section: pass/fail counts and rates plus the confusion matrix."""
    report = image_pass_fail(gt, detections, thresholds)
    matrix = confusion_matrix(gt, detections, matches, thresholds, iou_threshold)
    report["confusion_matrix"] = {
        "labels": [*gt.class_names, BACKGROUND],
        "rows": "ground truth",
        "columns": "predicted",
        "matrix": matrix.tolist(),
    }
    return report
