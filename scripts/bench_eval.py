"""Benchmark: detection.evaluation.evaluate_coco (default backend) against pycocotools COCOeval.

    python scripts/bench_eval.py                      # 5000 images, 80 classes, 100 dets/image
    python scripts/bench_eval.py --images 500 --out results/bench_eval_small.json

Prints both times, the speed ratio and the largest absolute difference over the 12 COCO
numbers, and saves them to a JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from detection.evaluation.coco import METRIC_KEYS, evaluate_coco


def synthesize(
    images: int, classes: int, boxes_per_image: float, dets_per_image: int, seed: int
) -> tuple[dict, list[dict]]:
    """A seeded COCO ground truth and a detector-like result list for it."""
    rng = np.random.default_rng(seed)
    width, height = 1024, 768
    n_gt = rng.poisson(boxes_per_image, size=images)
    image_of_gt = np.repeat(np.arange(1, images + 1), n_gt)
    total = len(image_of_gt)
    # Log-uniform sizes give a spread over COCO's small / medium / large.
    w = np.exp(rng.uniform(np.log(4), np.log(400), total))
    h = np.exp(rng.uniform(np.log(4), np.log(400), total))
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    cat = rng.integers(1, classes + 1, total)
    crowd = rng.random(total) < 0.01
    annotations = [
        {
            "id": i + 1,
            "image_id": int(image_of_gt[i]),
            "category_id": int(cat[i]),
            "bbox": [float(x[i]), float(y[i]), float(w[i]), float(h[i])],
            "area": float(w[i] * h[i]),
            "iscrowd": int(crowd[i]),
        }
        for i in range(total)
    ]
    gt = {
        "images": [{"id": i, "width": width, "height": height} for i in range(1, images + 1)],
        "categories": [{"id": c, "name": f"class_{c}"} for c in range(1, classes + 1)],
        "annotations": annotations,
    }

    # Per image: jittered copies of its gt boxes (sometimes with the wrong class), the rest
    # random boxes; scores favour the jittered copies, as a trained detector's would.
    first_gt = np.concatenate([[0], np.cumsum(n_gt)])
    predictions = []
    for img in range(images):
        lo, hi = first_gt[img], first_gt[img + 1]
        n_near = min(dets_per_image, 3 * (hi - lo))
        src = rng.integers(lo, hi, n_near) if hi > lo else np.zeros(0, dtype=int)
        jitter = rng.normal(0, 0.1, (n_near, 4))
        near = np.stack(
            [
                x[src] + jitter[:, 0] * w[src],
                y[src] + jitter[:, 1] * h[src],
                w[src] * np.exp(jitter[:, 2]),
                h[src] * np.exp(jitter[:, 3]),
            ],
            axis=1,
        )
        near_cat = np.where(
            rng.random(n_near) < 0.9, cat[src], rng.integers(1, classes + 1, n_near)
        )
        n_far = dets_per_image - n_near
        fw = np.exp(rng.uniform(np.log(4), np.log(400), n_far))
        fh = np.exp(rng.uniform(np.log(4), np.log(400), n_far))
        far = np.stack([rng.uniform(0, width - fw), rng.uniform(0, height - fh), fw, fh], axis=1)
        boxes = np.concatenate([near, far])
        cats = np.concatenate([near_cat, rng.integers(1, classes + 1, n_far)])
        # Rounded scores create ties, which COCOeval must break the same way in both.
        scores = np.round(np.concatenate([rng.beta(5, 2, n_near), rng.beta(2, 5, n_far)]), 3)
        for b, c, s in zip(boxes.tolist(), cats.tolist(), scores.tolist(), strict=True):
            predictions.append(
                {"image_id": img + 1, "category_id": int(c), "bbox": b, "score": float(s)}
            )
    return gt, predictions


def run_pycocotools(gt: dict, predictions: list[dict]) -> np.ndarray:
    """pycocotools' COCOeval stats, the reference."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(predictions)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats, dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its figures to JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--boxes-per-image", type=float, default=7.0)
    parser.add_argument("--dets-per-image", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("results/bench_eval.json"))
    args = parser.parse_args(argv)

    gt, predictions = synthesize(
        args.images, args.classes, args.boxes_per_image, args.dets_per_image, args.seed
    )
    print(
        f"{args.images} images, {args.classes} classes, {len(gt['annotations'])} gt boxes, "
        f"{len(predictions)} detections"
    )
    # pycocotools mutates what it is given; each side gets its own copy, outside the timing.
    gt_ref, predictions_ref = copy.deepcopy(gt), copy.deepcopy(predictions)

    # Wall time is what a user waits; CPU time is steadier on a machine shared with other jobs.
    start, start_cpu = time.perf_counter(), time.process_time()
    ours = evaluate_coco(gt, predictions)
    ours_s, ours_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    print(f"project (faster backend): {ours_s:8.2f} s wall {ours_cpu:8.2f} s CPU")

    start, start_cpu = time.perf_counter(), time.process_time()
    reference = run_pycocotools(gt_ref, predictions_ref)
    ref_s, ref_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    print(f"pycocotools COCOeval:     {ref_s:8.2f} s wall {ref_cpu:8.2f} s CPU")

    ours_values = np.array([ours[k] for k in METRIC_KEYS], dtype=np.float64)
    diff = float(np.max(np.abs(ours_values - reference)))
    ratio, cpu_ratio = ref_s / ours_s, ref_cpu / ours_cpu
    print(
        f"speed-up: {ratio:.1f}x wall ({cpu_ratio:.1f}x CPU)   "
        f"largest |difference| over the 12 numbers: {diff:.3g}"
    )
    for key, mine, ref in zip(METRIC_KEYS, ours_values, reference, strict=True):
        print(f"  {key:<6} {mine:.12f}  {ref:.12f}")

    figures = {
        "images": args.images,
        "classes": args.classes,
        "gt_boxes": len(gt["annotations"]),
        "detections": len(predictions),
        "seed": args.seed,
        "project_seconds": ours_s,
        "pycocotools_seconds": ref_s,
        "speedup": ratio,
        "project_cpu_seconds": ours_cpu,
        "pycocotools_cpu_seconds": ref_cpu,
        "speedup_cpu": cpu_ratio,
        "max_abs_diff": diff,
        "metrics": dict(zip(METRIC_KEYS, ours_values.tolist(), strict=True)),
        "reference": dict(zip(METRIC_KEYS, reference.tolist(), strict=True)),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
