"""COCO metrics: hand-computed cases, equality with pycocotools' COCOeval, bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detection.core.errors import InvalidInputError
from detection.evaluation.coco import METRIC_KEYS, evaluate_coco

BACKENDS = ("faster", "pycocotools")
SMALL_RANGES = {"tiny": [0, 8**2], "mid": [8**2, 24**2], "big": [24**2, 1e10]}


def make_gt(annotations, images=(1,), categories=((1, "scratch"),)):
    """A COCO dict; annotations are (image_id, category_id, [x, y, w, h], iscrowd)."""
    return {
        "images": [{"id": i, "width": 128, "height": 128} for i in images],
        "categories": [{"id": c, "name": n} for c, n in categories],
        "annotations": [
            {
                "id": k + 1,
                "image_id": img,
                "category_id": cat,
                "bbox": list(box),
                "area": box[2] * box[3],
                "iscrowd": crowd,
            }
            for k, (img, cat, box, crowd) in enumerate(annotations)
        ],
    }


def det(image_id, category_id, box, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": list(box), "score": score}


def reference(gt, predictions, max_dets=(1, 10, 100), area_ranges=None, iou_thresholds=None):
    """pycocotools' COCOeval (stats and per-class precision), fed independent copies."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        if predictions:
            coco_dt = coco_gt.loadRes(copy.deepcopy(predictions))
        else:  # loadRes cannot take an empty list; an empty result set is what it would build
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": copy.deepcopy(gt["images"]),
                "categories": copy.deepcopy(gt["categories"]),
                "annotations": [],
            }
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.maxDets = list(max_dets)
        if area_ranges is not None:
            evaluator.params.areaRng = [[0, 1e10], *area_ranges.values()]
        if iou_thresholds is not None:
            evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def stats_of(result):
    return np.array([result[k] for k in METRIC_KEYS])


def close(value):
    """pycocotools divides by (tp + fp + eps), so a perfect AP is 1 - 2e-16 there."""
    return pytest.approx(value, rel=0, abs=1e-12)


# --- hand-computed cases -------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_perfect_box_gives_ap_1(backend):
    gt = make_gt([(1, 1, [10, 10, 20, 20], 0)])  # area 400: COCO "small"
    result = evaluate_coco(gt, [det(1, 1, [10, 10, 20, 20], 0.9)], backend=backend)
    assert list(result)[:12] == list(METRIC_KEYS)
    ones = [result[k] for k in ("AP", "AP50", "AP75", "APs", "AR1", "AR10", "AR100", "ARs")]
    assert ones == [close(1.0)] * 8
    # No gt in the medium/large ranges: COCOeval reports -1 there.
    assert [result[k] for k in ("APm", "APl", "ARm", "ARl")] == [-1.0] * 4
    assert result["per_class"] == {"scratch": {"AP": close(1.0), "AP50": close(1.0)}}
    assert all(type(result[k]) is float for k in METRIC_KEYS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_miss_gives_ap_0(backend):
    gt = make_gt([(1, 1, [10, 10, 20, 20], 0)])
    result = evaluate_coco(gt, [det(1, 1, [80, 80, 20, 20], 0.9)], backend=backend)
    assert result["AP"] == 0.0 and result["AP50"] == 0.0 and result["AR100"] == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_detection_on_crowd_region_is_ignored(backend):
    gt = make_gt([(1, 1, [10, 10, 20, 20], 0), (1, 1, [60, 60, 50, 50], 1)])
    on_crowd = det(1, 1, [70, 70, 10, 10], 0.99)  # inside the crowd region, scored highest
    hit = det(1, 1, [10, 10, 20, 20], 0.5)
    assert evaluate_coco(gt, [on_crowd, hit], backend=backend)["AP"] == close(1.0)
    # The same detection without the crowd region is a false positive ranked first.
    plain = make_gt([(1, 1, [10, 10, 20, 20], 0)])
    assert evaluate_coco(plain, [on_crowd, hit], backend=backend)["AP"] == close(0.5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_predictions_match_cocoeval_without_detections(backend):
    gt = make_gt(
        [(1, 1, [10, 10, 20, 20], 0), (2, 2, [0, 0, 50, 50], 0)],
        images=(1, 2, 3),
        categories=((1, "scratch"), (2, "dent"), (3, "unused")),
    )
    result = evaluate_coco(gt, [], backend=backend)
    expected = reference(gt, []).stats
    np.testing.assert_allclose(stats_of(result), expected, rtol=0, atol=1e-12)
    # By hand: 0 where a class has gt in that range, -1 where nothing has.
    assert result["AP"] == 0.0 and result["APs"] == 0.0 and result["APm"] == 0.0
    assert result["APl"] == -1.0 and result["ARl"] == -1.0
    assert result["per_class"]["unused"] == {"AP": -1.0, "AP50": -1.0}
    assert result["per_class"]["dent"] == {"AP": 0.0, "AP50": 0.0}


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_ground_truth_at_all_gives_minus_one(backend):
    gt = make_gt([], images=(1, 2))
    result = evaluate_coco(gt, [det(1, 1, [0, 0, 5, 5], 0.3)], backend=backend)
    assert stats_of(result).tolist() == [-1.0] * 12


@pytest.mark.parametrize("backend", BACKENDS)
def test_tied_scores_keep_result_order(backend):
    gt = make_gt([(1, 1, [10, 10, 20, 20], 0)])
    hit = det(1, 1, [10, 10, 20, 20], 0.8)
    miss = det(1, 1, [90, 90, 20, 20], 0.8)
    # COCO's stable sort keeps list order among equal scores: hit first -> precision 1 at
    # recall 1; miss first -> precision 1/2 at every recall threshold.
    assert evaluate_coco(gt, [hit, miss], backend=backend)["AP"] == close(1.0)
    assert evaluate_coco(gt, [miss, hit], backend=backend)["AP"] == close(0.5)
    for order in ([hit, miss], [miss, hit]):
        ours = stats_of(evaluate_coco(gt, order, backend=backend))
        np.testing.assert_allclose(ours, reference(gt, order).stats, rtol=0, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_images_without_annotations_or_predictions_change_nothing(backend):
    predictions = [det(1, 1, [10, 10, 20, 20], 0.9), det(1, 1, [50, 50, 20, 20], 0.4)]
    small = make_gt([(1, 1, [10, 10, 20, 20], 0)])
    large = make_gt([(1, 1, [10, 10, 20, 20], 0)], images=(1, 2, 3))
    assert evaluate_coco(small, predictions, backend=backend) == evaluate_coco(
        large, predictions, backend=backend
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_max_dets(backend):
    gt = make_gt([(1, 1, [10 * k, 0, 8, 8], 0) for k in range(4)])
    # Three misses scored above the four hits.
    predictions = [det(1, 1, [100, 100 + k, 8, 8], 0.9) for k in range(3)]
    predictions += [det(1, 1, [10 * k, 0, 8, 8], 0.5) for k in range(4)]
    result = evaluate_coco(gt, predictions, backend=backend, max_dets=(1, 3, 5))
    assert (result["AR1"], result["AR10"], result["AR100"]) == (0.0, 0.0, 0.5)
    ref = reference(gt, predictions, max_dets=(1, 3, 5))
    # pycocotools' summarize reads AP at maxDets=100 even when 100 is not configured (-1);
    # ours uses the largest maxDets, as COCOeval does for every other AP number.
    np.testing.assert_allclose(stats_of(result)[1:], ref.stats[1:], rtol=0, atol=1e-12)
    precision = ref.eval["precision"][:, :, :, 0, -1]
    assert result["AP"] == pytest.approx(np.mean(precision[precision > -1]), abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_area_ranges_replace_small_medium_large(backend):
    gt = make_gt(
        [(1, 1, [0, 0, 4, 4], 0), (1, 1, [20, 20, 16, 16], 0), (1, 1, [50, 50, 40, 40], 0)]
    )
    predictions = [det(1, 1, [0, 0, 4, 4], 0.9), det(1, 1, [50, 50, 40, 40], 0.8)]
    result = evaluate_coco(gt, predictions, backend=backend, area_ranges=SMALL_RANGES)
    # These ranges put one box in each; COCO's put two in "small" and none in "large".
    assert (result["APs"], result["APm"], result["APl"]) == (close(1.0), 0.0, close(1.0))
    assert (result["ARs"], result["ARm"], result["ARl"]) == (1.0, 0.0, 1.0)
    ref = reference(gt, predictions, area_ranges=SMALL_RANGES)
    np.testing.assert_allclose(stats_of(result), ref.stats, rtol=0, atol=1e-12)
    coco_ranges = evaluate_coco(gt, predictions, backend=backend)
    assert coco_ranges["APm"] == close(1.0) and coco_ranges["APl"] == -1.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_iou_thresholds(backend):
    gt = make_gt([(1, 1, [0, 0, 10, 10], 0)])
    predictions = [det(1, 1, [0, 0, 10, 16], 0.9)]  # IoU 0.625
    result = evaluate_coco(gt, predictions, backend=backend, iou_thresholds=[0.5, 0.6])
    assert (result["AP"], result["AP50"], result["AP75"]) == (close(1.0), close(1.0), -1.0)
    ref = reference(gt, predictions, iou_thresholds=[0.5, 0.6])
    np.testing.assert_allclose(stats_of(result), ref.stats, rtol=0, atol=1e-12)


def test_reads_json_files_and_leaves_inputs_untouched(tmp_path):
    gt = make_gt([(1, 1, [10, 10, 20, 20], 0)])
    predictions = [det(1, 1, [10, 10, 20, 20], 0.9)]
    before = copy.deepcopy((gt, predictions))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(predictions))
    from_files = evaluate_coco(tmp_path / "gt.json", str(tmp_path / "pred.json"))
    assert from_files == evaluate_coco(gt, predictions)
    assert (gt, predictions) == before


def test_annotation_id_zero_is_not_mistaken_for_unmatched():
    # Both COCO evaluators use gt id 0 as "no match"; ids are renumbered to avoid it.
    gt = make_gt([(1, 1, [10, 10, 20, 20], 0)])
    gt["annotations"][0]["id"] = 0
    assert evaluate_coco(gt, [det(1, 1, [10, 10, 20, 20], 0.9)])["AP"] == close(1.0)


# --- random cases against pycocotools -------------------------------------------------------


@st.composite
def coco_cases(draw):
    """Small random datasets: crowd regions, empty images, tied scores, duplicate boxes."""
    n_images = draw(st.integers(1, 4))
    n_classes = draw(st.integers(1, 3))
    coords = st.integers(0, 60)
    sizes = st.integers(1, 40)
    annotations = []
    for image_id in range(1, n_images + 1):
        for _ in range(draw(st.integers(0, 4))):
            box = [draw(coords), draw(coords), draw(sizes), draw(sizes)]
            crowd = int(draw(st.integers(0, 5)) == 0)
            annotations.append((image_id, draw(st.integers(1, n_classes)), box, crowd))
    predictions = []
    for image_id in range(1, n_images + 1):
        mine = [a for a in annotations if a[0] == image_id]
        for _ in range(draw(st.integers(0, 6))):
            if mine and draw(st.booleans()):
                _, cat, (x, y, w, h), _ = draw(st.sampled_from(mine))
                dx, dy, dw, dh = (draw(st.integers(-4, 4)) for _ in range(4))
                box = [x + dx, y + dy, max(0, w + dw), max(0, h + dh)]
                if draw(st.integers(0, 4)) == 0:
                    cat = draw(st.integers(1, n_classes))
            else:
                box = [draw(coords), draw(coords), draw(sizes), draw(sizes)]
                cat = draw(st.integers(1, n_classes))
            score = draw(st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9]))  # ties on purpose
            predictions.append(det(image_id, cat, box, score))
    gt = make_gt(
        annotations,
        images=range(1, n_images + 1),
        categories=[(c, f"class{c}") for c in range(1, n_classes + 1)],
    )
    max_dets = draw(st.sampled_from([(1, 10, 100), (1, 2, 100), (2, 3, 100)]))
    area_ranges = draw(st.sampled_from([None, SMALL_RANGES]))
    return gt, predictions, max_dets, area_ranges


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coco_cases())
def test_random_cases_equal_pycocotools(case):
    gt, predictions, max_dets, area_ranges = case
    ref = reference(gt, predictions, max_dets=max_dets, area_ranges=area_ranges)
    precision = ref.eval["precision"]
    for backend in BACKENDS:
        result = evaluate_coco(
            gt, predictions, backend=backend, max_dets=max_dets, area_ranges=area_ranges
        )
        np.testing.assert_allclose(stats_of(result), ref.stats, rtol=0, atol=1e-9)
        for k, category in enumerate(gt["categories"]):
            p = precision[:, :, k, 0, -1]
            expected = float(np.mean(p[p > -1])) if (p > -1).any() else -1.0
            assert result["per_class"][category["name"]]["AP"] == pytest.approx(expected, abs=1e-9)


# --- bad input -----------------------------------------------------------------------------


GOOD = {"image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5}


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"image_id": 99}, "image_id", "unknown image id 99"),
        ({"category_id": 5}, "category_id", "unknown category id 5"),
        ({"score": float("nan")}, "score", "finite"),
        ({"score": float("inf")}, "score", "finite"),
        ({"score": "high"}, "score", "finite"),
        ({"bbox": [1, 1, -5, 5]}, "bbox", "width and height must be >= 0"),
        ({"bbox": [1, 1, 5]}, "bbox", "[x, y, w, h]"),
        ({"bbox": [1, float("nan"), 5, 5]}, "bbox", "finite"),
        ({"score": None}, "score", "finite"),
    ],
)
def test_bad_prediction_names_file_record_and_field(tmp_path, change, field, words):
    gt = make_gt([(1, 1, [10, 10, 20, 20], 0)])
    records = [dict(GOOD), dict(GOOD), {**GOOD, **change}]
    with pytest.raises(InvalidInputError) as caught:
        evaluate_coco(gt, records)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("predictions: record 2: field '" + field + "'")
    assert words in message
    assert (caught.value.record, caught.value.field) == ("record 2", field)

    path = tmp_path / "pred.json"
    path.write_text(json.dumps(records).replace("NaN", '"x"').replace("Infinity", '"x"'))
    with pytest.raises(InvalidInputError, match=rf"^{path}: record 2: field '{field}'"):
        evaluate_coco(gt, path)


def test_missing_field_is_named():
    gt = make_gt([(1, 1, [10, 10, 20, 20], 0)])
    record = {k: v for k, v in GOOD.items() if k != "bbox"}
    with pytest.raises(InvalidInputError, match=r"record 0: field 'bbox': missing"):
        evaluate_coco(gt, [record])


def test_bad_ground_truth_and_files_are_named(tmp_path):
    bad_gt = make_gt([(1, 7, [10, 10, 20, 20], 0)])
    with pytest.raises(
        InvalidInputError,
        match=r"annotations\[0\] \(id 1\): field 'category_id': no category with id 7",
    ):
        evaluate_coco(bad_gt, [])
    with pytest.raises(InvalidInputError, match=r"missing.json: file not found"):
        evaluate_coco(tmp_path / "missing.json", [])
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match=r"broken.json: line 1 column 2: malformed JSON"):
        evaluate_coco(make_gt([]), tmp_path / "broken.json")


def test_bad_parameters_are_rejected():
    gt = make_gt([(1, 1, [10, 10, 20, 20], 0)])
    with pytest.raises(ValueError, match="backend"):
        evaluate_coco(gt, [], backend="nope")
    with pytest.raises(ValueError, match="area_ranges"):
        evaluate_coco(gt, [], area_ranges={"small": [0, 10]})
    with pytest.raises(ValueError, match="max_dets"):
        evaluate_coco(gt, [], max_dets=(1, 10))
