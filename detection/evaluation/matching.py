"""Per-detection COCO matching at one IoU threshold, read back from the COCO evaluators."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from detection.evaluation.coco import check_backend, run_cocoeval
from detection.evaluation.inputs import GroundTruth


@dataclass(frozen=True)
class Matches:
    """How each detection fared in COCO's greedy matching at one IoU threshold.

    Arrays are aligned with the detection list given to :func:`match_detections`.
    ``gt_index`` is the matched ground-truth position in ``gt.dataset["annotations"]``
    (-1 if none); ``ignored`` marks detections matched to a crowd region, which COCO counts
    as neither true nor false positive.
    """

    gt_index: np.ndarray
    ignored: np.ndarray

    @property
    def true_positive(self) -> np.ndarray:
        """Detections matched to a regular (non-crowd) ground truth."""
        return (self.gt_index >= 0) & ~self.ignored


def match_detections(
    gt: GroundTruth, detections: list[dict], iou_threshold: float, backend: str = "faster"
) -> Matches:
    """Greedy COCO matching (descending score, per image and class) of ``detections`` to ``gt``.

    The evaluator runs with a single IoU threshold, the 'all' area range and a detection cap
    no image reaches, so every detection takes part. Because matching proceeds in descending
    score order, a detection's outcome never depends on lower-scored ones: one matching
    serves every score threshold.
    """
    check_backend(backend)
    n = len(detections)
    gt_index = np.full(n, -1, dtype=np.int64)
    ignored = np.zeros(n, dtype=bool)
    if n == 0 or not gt.dataset["annotations"]:
        return Matches(gt_index, ignored)
    per_image_class = Counter((d["image_id"], d["category_id"]) for d in detections)
    evaluator = run_cocoeval(
        backend,
        gt,
        detections,
        iou_thresholds=[iou_threshold],
        area_ranges={},
        max_dets=[max(per_image_class.values())],
        accumulate=backend == "faster",
    )
    # Ground-truth ids were renumbered 1..N (position + 1) and detection ids are position + 1.
    crowd = np.array([a["iscrowd"] for a in gt.dataset["annotations"]], dtype=bool)
    if backend == "faster":
        for key in evaluator.eval["matched"]:
            dt_id, gt_id = key.split("_", 1)
            gt_index[int(dt_id) - 1] = int(gt_id) - 1
    else:
        for entry in evaluator.evalImgs:
            if entry is None:
                continue
            for dt_id, gt_id in zip(entry["dtIds"], entry["dtMatches"][0], strict=True):
                if gt_id > 0:
                    gt_index[int(dt_id) - 1] = int(gt_id) - 1
    matched = gt_index >= 0
    ignored[matched] = crowd[gt_index[matched]]
    return Matches(gt_index, ignored)
