"""DetectionEvaluator: reset/process/evaluate, partial passes, DDP gathering and de-duplication."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from detection.core.errors import InvalidInputError
from detection.evaluation.evaluator import DetectionEvaluator, evaluate_detections


def make_case(n_images=12, seed=0):
    """A small random ground truth (some images empty) and per-image detections."""
    rng = np.random.default_rng(seed)
    images, annotations, per_image = [], [], {}
    for image_id in range(1, n_images + 1):
        images.append({"id": image_id, "width": 100, "height": 100})
        boxes = []
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 70, 2)
            box = [float(x), float(y), 20.0, 20.0]
            boxes.append(box)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.integers(1, 3)),
                    "bbox": box,
                    "area": 400.0,
                    "iscrowd": 0,
                }
            )
        dets = []
        for box in boxes:
            jitter = rng.normal(0, 2, 2)
            dets.append(
                {
                    "category_id": int(rng.integers(1, 3)),
                    "bbox": [box[0] + jitter[0], box[1] + jitter[1], 20.0, 20.0],
                    "score": float(rng.uniform(0.3, 1)),
                }
            )
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 80, 2)
            dets.append(
                {
                    "category_id": int(rng.integers(1, 3)),
                    "bbox": [float(x), float(y), 15.0, 15.0],
                    "score": float(rng.uniform(0, 0.8)),
                }
            )
        per_image[image_id] = dets
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}],
    }
    return gt, per_image


def flat(per_image, image_ids=None):
    ids = sorted(per_image) if image_ids is None else image_ids
    return [{"image_id": i, **d} for i in ids for d in per_image[i]]


def test_process_evaluate_equals_one_shot_evaluation():
    gt, per_image = make_case()
    evaluator = DetectionEvaluator(gt, target_recall=0.9)
    for image_id, dets in per_image.items():
        evaluator.process(image_id, dets)
    report = evaluator.evaluate()
    expected = evaluate_detections(gt, flat(per_image), target_recall=0.9).report
    assert report == expected
    assert list(report)[:12] == ["AP", "AP50", "AP75", "APs", "APm", "APl"] + [
        "AR1",
        "AR10",
        "AR100",
        "ARs",
        "ARm",
        "ARl",
    ]
    for key in ("per_class", "operating_point", "image_level", "calibrated_thresholds"):
        assert key in report
    assert set(report["operating_point"]["per_class"]) == {"scratch", "dent"}


def test_only_processed_images_count_and_reset_forgets():
    gt, per_image = make_case()
    evaluator = DetectionEvaluator(gt)
    for image_id in (1, 2, 3):
        evaluator.process(image_id, per_image[image_id])
    evaluator.process(4, [])  # no detections: still an evaluated image
    report = evaluator.evaluate()
    assert report["image_level"]["images"] == 4
    expected = evaluate_detections(gt, flat(per_image, [1, 2, 3]), image_ids=[1, 2, 3, 4]).report
    assert report == expected

    evaluator.reset()
    evaluator.process(5, per_image[5])
    assert evaluator.evaluate()["image_level"]["images"] == 1


def test_repeated_image_counts_once():
    gt, per_image = make_case()
    evaluator = DetectionEvaluator(gt)
    for image_id, dets in per_image.items():
        evaluator.process(image_id, dets)
    evaluator.process(1, per_image[1])  # sampler padding repeats images
    expected = evaluate_detections(gt, flat(per_image)).report
    assert evaluator.evaluate() == expected


def test_bad_calls_fail_early():
    gt, per_image = make_case()
    evaluator = DetectionEvaluator(gt)
    with pytest.raises(InvalidInputError, match="unknown image id 999"):
        evaluator.process(999, [])
    with pytest.raises(ValueError, match="image 2"):
        evaluator.process(
            1, [{"image_id": 2, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}]
        )
    with pytest.raises(ValueError, match="unknown classes"):
        DetectionEvaluator(gt, score_threshold={"crack": 0.3})
    with pytest.raises(ValueError, match="iou_threshold"):
        DetectionEvaluator(gt, iou_threshold=0.0)


def shards(per_image, world_size):
    """What DistributedSampler hands each rank: strided, padded with repeats to equal length."""
    ids = sorted(per_image)
    padded = ids + ids[: (-len(ids)) % world_size]
    return [padded[rank::world_size] for rank in range(world_size)]


def _ddp_worker(rank, world_size, store, out_dir, gt, per_image):
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        evaluator = DetectionEvaluator(gt)
        for image_id in shards(per_image, world_size)[rank]:
            evaluator.process(image_id, per_image[image_id])
        report = evaluator.evaluate()
        with open(f"{out_dir}/rank{rank}.json", "w") as handle:
            json.dump(report, handle)
    finally:
        dist.destroy_process_group()


def test_real_gloo_process_group_matches_single_process(tmp_path):
    gt, per_image = make_case(n_images=9)
    mp.spawn(
        _ddp_worker,
        args=(2, str(tmp_path / "store"), str(tmp_path), gt, per_image),
        nprocs=2,
        join=True,
    )
    expected = json.loads(json.dumps(evaluate_detections(gt, flat(per_image)).report))
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected


def test_nothing_processed_gives_an_empty_report():
    gt, _ = make_case()
    report = DetectionEvaluator(gt, score_threshold=0.4).evaluate()
    assert report["AP"] == -1.0 and report["image_level"]["images"] == 0
    assert report["calibrated_thresholds"] == {"scratch": 0.4, "dent": 0.4}
