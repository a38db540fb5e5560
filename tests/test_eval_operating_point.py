"""Operating point, threshold calibration and image-level numbers on a case worked by hand."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.core.thresholds import Thresholds
from detection.evaluation.evaluator import evaluate_detections
from detection.evaluation.inputs import load_ground_truth, load_predictions
from detection.evaluation.matching import match_detections
from detection.evaluation.operating_point import class_curve

# Image 1: a scratch A and a dent B. Image 2: a scratch C and a crowd region of scratches D.
# Image 3: defect-free. Image 4: a dent E.
GT = {
    "images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3, 4)],
    "categories": [{"id": 3, "name": "scratch"}, {"id": 7, "name": "dent"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100},  # A
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [50, 50, 10, 10], "area": 100},  # B
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10], "area": 100},  # C
        {  # D
            "id": 4,
            "image_id": 2,
            "category_id": 3,
            "bbox": [50, 50, 40, 40],
            "area": 1600,
            "iscrowd": 1,
        },
        {"id": 5, "image_id": 4, "category_id": 7, "bbox": [20, 20, 10, 10], "area": 100},  # E
    ],
}


def det(image_id, category_id, box, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": score}


PREDICTIONS = [
    det(1, 3, [0, 0, 10, 10], 0.9),  # d0 scratch on A: TP
    det(1, 3, [0, 0, 10, 10], 0.8),  # d1 duplicate of A: FP
    det(1, 3, [50, 50, 10, 10], 0.7),  # d2 "scratch" on dent B: FP, a class confusion
    det(1, 7, [50, 50, 10, 10], 0.3),  # d3 dent on B: TP, but below 0.5
    det(2, 3, [55, 55, 10, 10], 0.95),  # d4 inside crowd D: ignored
    det(2, 3, [1, 1, 10, 10], 0.6),  # d5 on C, IoU 81/119 = 0.68: TP
    det(3, 7, [0, 0, 10, 10], 0.55),  # d6 on a defect-free image: FP, false reject
    det(4, 7, [80, 80, 5, 5], 0.2),  # d7 misses E: FP, low score
]


@pytest.fixture(scope="module", params=["faster", "pycocotools"])
def report(request):
    return evaluate_detections(
        GT, PREDICTIONS, backend=request.param, score_threshold=0.5, target_recall=1.0
    ).report


def test_matching_by_hand():
    gt = load_ground_truth(GT)
    detections = load_predictions(PREDICTIONS, gt)
    for backend in ("faster", "pycocotools"):
        matches = match_detections(gt, detections, 0.5, backend)
        # Ground-truth positions: A=0, B=1, C=2, D=3, E=4.
        assert matches.gt_index.tolist() == [0, -1, -1, 1, 3, 2, -1, -1]
        assert matches.ignored.tolist() == [False] * 4 + [True] + [False] * 3
        assert matches.true_positive.tolist() == [
            True,
            False,
            False,
            True,
            False,
            True,
            False,
            False,
        ]
    # A stricter IoU loses the shifted detection on C.
    strict = match_detections(gt, detections, 0.7)
    assert strict.gt_index[5] == -1


def test_operating_point_counts_by_hand(report):
    op = report["operating_point"]
    assert op["iou_threshold"] == 0.5 and op["score_threshold"] == 0.5
    scratch, dent = op["per_class"]["scratch"], op["per_class"]["dent"]
    # scratch at 0.5: d0, d5 TP; d1, d2 FP; d4 on the crowd region counts for nothing.
    assert (scratch["tp"], scratch["fp"], scratch["fn"]) == (2, 2, 0)
    assert scratch["precision"] == 0.5 and scratch["recall"] == 1.0
    assert scratch["f1"] == pytest.approx(2 / 3)
    # dent at 0.5: only d6 passes, a false positive; B and E are missed.
    assert (dent["tp"], dent["fp"], dent["fn"]) == (0, 1, 2)
    assert (dent["precision"], dent["recall"], dent["f1"]) == (0.0, 0.0, 0.0)
    overall = op["overall"]
    assert (overall["tp"], overall["fp"], overall["fn"]) == (2, 3, 2)
    assert overall["precision"] == pytest.approx(0.4)
    assert overall["recall"] == pytest.approx(0.5)
    assert overall["f1"] == pytest.approx(4 / 9)


def test_threshold_choice_by_hand(report):
    per_class = report["operating_point"]["per_class"]
    # scratch F1 at thresholds .9/.8/.7/.6 is 2/3, 1/2, 2/5, 2/3: the tie goes to the lower.
    assert per_class["scratch"]["best_f1_threshold"] == 0.6
    assert per_class["scratch"]["best_f1"] == pytest.approx(2 / 3)
    assert per_class["scratch"]["target_recall_threshold"] == 0.6
    # dent F1 at .55/.3/.2 is 0, 1/2, 2/5; recall never reaches 1.0.
    assert per_class["dent"]["best_f1_threshold"] == 0.3
    assert per_class["dent"]["best_f1"] == 0.5
    assert per_class["dent"]["target_recall_threshold"] is None
    assert report["calibrated_thresholds"] == {"scratch": 0.6, "dent": 0.3}


def test_target_recall_is_the_highest_threshold_reaching_it():
    report = evaluate_detections(GT, PREDICTIONS, target_recall=0.5).report
    per_class = report["operating_point"]["per_class"]
    assert per_class["scratch"]["target_recall_threshold"] == 0.9
    assert per_class["dent"]["target_recall_threshold"] == 0.3
    no_target = evaluate_detections(GT, PREDICTIONS).report["operating_point"]["per_class"]
    assert no_target["scratch"]["target_recall_threshold"] is None


def test_image_level_by_hand(report):
    level = report["image_level"]
    # Failing images: 1 (d0), 2 (d4: the machine cannot tell a crowd region), 3 (d6).
    # Defective: 1, 2, 4. Defect-free: 3.
    assert level["images"] == 4
    assert (level["defective_images"], level["defect_free_images"]) == (3, 1)
    assert (level["failed_images"], level["defective_failed"]) == (3, 2)
    assert (level["escapes"], level["false_rejects"]) == (1, 1)
    assert level["defective_recall"] == pytest.approx(2 / 3)
    assert level["escape_rate"] == pytest.approx(1 / 3)
    assert level["false_reject_rate"] == 1.0


def test_confusion_matrix_by_hand(report):
    confusion = report["image_level"]["confusion_matrix"]
    assert confusion["labels"] == ["scratch", "dent", "background"]
    assert confusion["matrix"] == [
        [2, 0, 0],  # scratch: A and C found
        [1, 0, 1],  # dent: B taken for a scratch (d2), E missed
        [1, 1, 0],  # background: duplicate d1 as scratch, d6 as dent
    ]
    # Rows add up to the gt count, columns to TP + FP of the predicted class.
    matrix = np.array(confusion["matrix"])
    per_class = report["operating_point"]["per_class"]
    for k, name in enumerate(confusion["labels"][:-1]):
        stats = per_class[name]
        assert matrix[k, k] == stats["tp"]
        assert matrix[k].sum() == stats["tp"] + stats["fn"]
        assert matrix[:, k].sum() == stats["tp"] + stats["fp"]


def test_per_class_thresholds_by_hand():
    thresholds = {"scratch": 0.85, "dent": 0.25}
    report = evaluate_detections(GT, PREDICTIONS, score_threshold=thresholds).report
    per_class = report["operating_point"]["per_class"]
    assert report["operating_point"]["score_threshold"] == thresholds
    # scratch at .85: d0 TP (d4 ignored). dent at .25: d6 FP, d3 TP.
    assert (per_class["scratch"]["tp"], per_class["scratch"]["fp"], per_class["scratch"]["fn"]) == (
        1,
        0,
        1,
    )
    assert (per_class["dent"]["tp"], per_class["dent"]["fp"], per_class["dent"]["fn"]) == (1, 1, 1)
    assert report["image_level"]["confusion_matrix"]["matrix"] == [
        [1, 0, 1],  # C missed
        [0, 1, 1],  # B found by d3, E missed
        [0, 1, 0],  # d6
    ]
    assert report["image_level"]["escapes"] == 1  # image 4: d7 (0.2) is below 0.25


def test_partial_threshold_mapping_uses_default_and_rejects_unknown_names():
    report = evaluate_detections(
        GT, PREDICTIONS, score_threshold=Thresholds(0.85, {"dent": 0.25})
    ).report
    per_class = report["operating_point"]["per_class"]
    assert (per_class["scratch"]["threshold"], per_class["dent"]["threshold"]) == (0.85, 0.25)
    assert report["operating_point"]["score_threshold"] == {"dent": 0.25}
    with pytest.raises(ValueError, match="unknown classes"):
        evaluate_detections(GT, PREDICTIONS, score_threshold={"crack": 0.2})


def test_class_curve_groups_tied_scores():
    curve = class_curve(np.array([0.9, 0.5, 0.5, 0.2]), np.array([True, False, True, False]), 3)
    assert curve.thresholds.tolist() == [0.9, 0.5, 0.2]
    assert curve.tp.tolist() == [1, 2, 2] and curve.fp.tolist() == [0, 1, 2]
    assert curve.recall.tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert curve.precision.tolist() == pytest.approx([1.0, 2 / 3, 0.5])


def test_no_detections_at_all():
    report = evaluate_detections(GT, [], target_recall=0.9).report
    op = report["operating_point"]
    assert op["overall"] == {"tp": 0, "fp": 0, "fn": 4, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert op["per_class"]["scratch"]["best_f1_threshold"] is None
    assert report["calibrated_thresholds"] == {"scratch": 0.5, "dent": 0.5}
    assert report["image_level"]["escapes"] == 3
    assert report["image_level"]["false_rejects"] == 0
    assert report["image_level"]["confusion_matrix"]["matrix"] == [[0, 0, 2], [0, 0, 2], [0, 0, 0]]


@st.composite
def random_cases(draw):
    """Small random datasets with crowd regions, class confusions and tied scores."""
    n_images, n_classes = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    boxes = st.lists(st.integers(0, 50), min_size=4, max_size=4).map(
        lambda v: [v[0], v[1], v[2] % 30 + 1, v[3] % 30 + 1]
    )
    annotations, predictions = [], []
    for image_id in range(1, n_images + 1):
        mine = []
        for _ in range(draw(st.integers(0, 4))):
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": draw(st.integers(1, n_classes)),
                "bbox": draw(boxes),
                "iscrowd": int(draw(st.integers(0, 5)) == 0),
            }
            annotations.append(ann)
            mine.append(ann)
        for _ in range(draw(st.integers(0, 6))):
            if mine and draw(st.booleans()):
                x, y, w, h = draw(st.sampled_from(mine))["bbox"]
                box = [x + draw(st.integers(-3, 3)), y, w, h + draw(st.integers(0, 3))]
            else:
                box = draw(boxes)
            predictions.append(
                det(
                    image_id,
                    draw(st.integers(1, n_classes)),
                    box,
                    draw(st.sampled_from([0.2, 0.5, 0.8])),
                )
            )
    gt = {
        "images": [{"id": i} for i in range(1, n_images + 1)],
        "categories": [{"id": c, "name": f"c{c}"} for c in range(1, n_classes + 1)],
        "annotations": annotations,
    }
    return gt, predictions, draw(st.sampled_from([0.0, 0.5, 0.7]))


@settings(max_examples=25, deadline=None)
@given(random_cases())
def test_random_cases_are_consistent_with_cocoeval(case):
    gt, predictions, threshold = case
    reports = [
        evaluate_detections(gt, predictions, backend=b, score_threshold=threshold).report
        for b in ("faster", "pycocotools")
    ]
    assert reports[0]["operating_point"] == reports[1]["operating_point"]
    assert reports[0]["image_level"] == reports[1]["image_level"]
    report = reports[0]
    matrix = np.array(report["image_level"]["confusion_matrix"]["matrix"])
    per_class = report["operating_point"]["per_class"]
    for k, stats in enumerate(per_class.values()):
        assert matrix[k, k] == stats["tp"]
        assert matrix[k].sum() == stats["tp"] + stats["fn"]
        assert matrix[:, k].sum() == stats["tp"] + stats["fp"]
    if threshold == 0.0 and predictions:
        # With every detection admitted, recall is COCOeval's recall at IoU 0.5 (maxDets 100
        # is never reached here).
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt)
            for ann in coco_gt.dataset["annotations"]:  # pycocotools needs it; ours defaults it
                ann["area"] = ann["bbox"][2] * ann["bbox"][3]
            coco_gt.createIndex()
            coco_dt = coco_gt.loadRes(copy.deepcopy(predictions))
            evaluator = COCOeval(coco_gt, coco_dt, "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
        recall = evaluator.eval["recall"][0, :, 0, -1]
        for k, stats in enumerate(per_class.values()):
            if recall[k] > -1:
                assert stats["recall"] == pytest.approx(recall[k], abs=1e-12)
