"""Labels for an inspect folder: join a COCO ground truth to the results, reuse the evaluator.

Everything that needs labels (matching, escapes, false rejects, P/R/F1, the PR and F1 plots)
comes from detection/evaluation/; this module only joins images by path and keeps, per
detection, whether COCO matching made it a true positive. Matching runs in descending score
order, so one matching serves every threshold the page's sliders reach.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detection.core.coco_format import read_json, results
from detection.core.errors import InvalidInputError
from detection.core.thresholds import Thresholds
from detection.evaluation.evaluator import evaluate_detections
from detection.evaluation.image_level import image_pass_fail
from detection.evaluation.inputs import GroundTruth, load_ground_truth, restrict_to_images
from detection.evaluation.matching import match_detections
from detection.evaluation.plots import plot_f1_curves, plot_pr_curves
from detection.report.folder import InspectFolder

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, 2  # a detection's outcome in the payload
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95 % interval


@dataclass
class Labels:
    """Ground truth joined to an inspect folder's records (aligned with ``folder.records``)."""

    gt: GroundTruth
    image_ids: list[int | None]  # the ground-truth image of each record, None if unlabelled
    defective: list[bool | None]  # whether the image has a (non-crowd) defect, None if unlabelled
    outcomes: list[list[int]]  # per record, per detection: TRUE_POSITIVE / FALSE_POSITIVE / IGNORED
    num_gt: dict[str, int]  # non-crowd ground truths per class over the labelled images
    # The evaluator's report and curves at the job's thresholds.
    report: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, Any] = field(default_factory=dict)

    def detections(self, folder: InspectFolder) -> list[dict[str, Any]]:
        """The labelled records' detections as the evaluator's COCO result records."""
        return _coco_detections(folder, self.gt, self.image_ids)


def wilson_interval(successes: int, trials: int) -> tuple[float, float] | None:
    """The 95 % Wilson score interval of a rate, or None without trials."""
    if trials == 0:
        return None
    p = successes / trials
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z95 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _image_index(data: dict[str, Any], images_root: Path) -> dict[str, int]:
    """Absolute, normalised path of each ground-truth image -> its id."""
    index = {}
    for image in data["images"]:
        path = os.path.normpath(os.path.abspath(images_root / str(image["file_name"])))
        index[path] = int(image["id"])
    return index


def _coco_detections(
    folder: InspectFolder, gt: GroundTruth, image_ids: list[int | None]
) -> list[dict[str, Any]]:
    category = {name: cat_id for cat_id, name in gt.category_names.items()}
    detections = []
    for record, image_id in zip(folder.records, image_ids, strict=True):
        if image_id is None:
            continue
        dets = record["detections"]
        detections += results(
            image_id,
            [d["bbox"] for d in dets],
            [d["score"] for d in dets],
            [category[d["class_name"]] for d in dets],
        )
    return detections


def join_labels(
    folder: InspectFolder, gt_path: str | Path, images_root: str | Path | None, iou: float = 0.5
) -> Labels:
    """Match the folder's images to ``gt_path``'s by path (``images_root``/file_name; default:
    the json's folder) and evaluate the labelled ones at the job's thresholds.

    Raises:
        InvalidInputError: a bad ground truth, a class the model has and the labels lack, or
            no inspected image that the ground truth lists.
    """
    gt_path = Path(gt_path)
    root = Path(images_root) if images_root is not None else gt_path.parent
    data = read_json(gt_path)
    gt = load_ground_truth(data if isinstance(data, dict) else gt_path)
    missing = sorted(set(folder.class_names) - set(gt.class_names))
    if missing:
        raise InvalidInputError(gt_path, f"has no category named {missing[0]!r} (a model class)")
    index = _image_index(data, root)
    image_ids = [index.get(os.path.normpath(os.path.abspath(r["image"]))) for r in folder.records]
    labelled = sorted({i for i in image_ids if i is not None})
    if not labelled:
        raise InvalidInputError(
            gt_path, f"lists none of the inspected images (looked under {root}; set --images)"
        )
    gt = restrict_to_images(gt, labelled)
    detections = _coco_detections(folder, gt, image_ids)
    thresholds = Thresholds(None, folder.thresholds)
    evaluation = evaluate_detections(gt, detections, iou_threshold=iou, score_threshold=thresholds)
    matches = match_detections(gt, evaluation.detections, iou)
    flat = [
        IGNORED if ignored else TRUE_POSITIVE if tp else FALSE_POSITIVE
        for tp, ignored in zip(matches.true_positive, matches.ignored, strict=True)
    ]
    outcomes, position = [], 0
    for record, image_id in zip(folder.records, image_ids, strict=True):
        count = len(record["detections"]) if image_id is not None else 0
        outcomes.append(flat[position : position + count])
        position += count
    defective_ids = {a["image_id"] for a in gt.dataset["annotations"] if not a["iscrowd"]}
    num_gt = dict.fromkeys(gt.class_names, 0)
    for ann in gt.dataset["annotations"]:
        if not ann["iscrowd"]:
            num_gt[gt.category_names[ann["category_id"]]] += 1
    return Labels(
        gt=gt,
        image_ids=image_ids,
        defective=[None if i is None else i in defective_ids for i in image_ids],
        outcomes=outcomes,
        num_gt={name: num_gt[name] for name in folder.class_names},
        report=evaluation.report,
        curves=evaluation.curves,
    )


def image_level_at(folder: InspectFolder, labels: Labels, thresholds: dict[str, float]) -> dict:
    """The evaluator's image-level counts (escapes, false rejects) at ``thresholds``."""
    per_class = {**dict.fromkeys(labels.gt.class_names, math.inf), **thresholds}
    return image_pass_fail(labels.gt, labels.detections(folder), per_class)


def save_label_plots(labels: Labels, out_dir: Path) -> list[str]:
    """The evaluator's PR and F1 plots of the labelled images, as file names in ``out_dir``."""
    op = labels.report["operating_point"]
    thresholds = {name: stats["threshold"] for name, stats in op["per_class"].items()}
    plot_pr_curves(labels.curves, thresholds, op["iou_threshold"], out_dir / "pr_curves.png")
    plot_f1_curves(labels.curves, thresholds, out_dir / "f1_vs_threshold.png")
    return ["pr_curves.png", "f1_vs_threshold.png"]
