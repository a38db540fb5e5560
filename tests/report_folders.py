"""Test helpers for the HTML report: inspect folders with known content, hostile names included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detection.report.synthetic import detection, record, write_inspect_folder

THRESHOLDS = {"scratch": 0.5, "dent": 0.6, "stain": 0.4}  # stain: a class with no detection
CATEGORY_IDS = {"scratch": 1, "dent": 2, "stain": 3}
# Image names a page must show as text: spaces, quotes, markup, non-ASCII.
NAMES = ("part {}.png", "quo\"te'{}.png", "<script>alert({})&amp;.png", "défaut-é{}.png")
# Detections scoring exactly a threshold the tests move to (or the job's own).
AT_THRESHOLD = {
    7: ("scratch", 0.3),
    11: ("dent", 0.85),
    13: ("scratch", 0.72),
    17: ("scratch", 0.5),
}
MISSING = 5  # this image's file is never written: a placeholder, the page still works


def hostile_folder(root: Path, count: int = 70, seed: int = 0) -> dict[str, Any]:
    """An inspect folder of ``count`` images (one missing on disk, one error line) with 0-3
    detections each, and a COCO ground truth of them; returns paths, records and summary."""
    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True)
    records, annotations, coco_images = [], [], []
    for i in range(count):
        path = images / NAMES[i % len(NAMES)].format(i)
        width, height = 96, 64
        if i != MISSING:
            pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        dets = []
        for _ in range(int(rng.integers(0, 4))):
            name = ("scratch", "dent")[int(rng.integers(0, 2))]
            x, y = float(rng.uniform(0, 60)), float(rng.uniform(0, 30))
            score = float(rng.uniform(0.05, 1.0))
            dets.append(
                detection(name, score, [x, y, x + 20, y + 15], THRESHOLDS[name], CATEGORY_IDS[name])
            )
            if rng.random() < 0.6:  # a true defect near this detection
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": CATEGORY_IDS[name],
                        "bbox": [x + 1, y + 1, 20, 15],
                        "area": 300.0,
                        "iscrowd": 0,
                    }
                )
        if i % 9 == 0:  # a defect the model did not report at all
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                 "bbox": [70, 40, 10, 10], "area": 100.0, "iscrowd": 0}
            )  # fmt: skip
        if i in AT_THRESHOLD:  # a score equal to a tested threshold: `>=` must count it
            name, score = AT_THRESHOLD[i]
            dets.append(
                detection(name, score, [2, 2, 12, 12], THRESHOLDS[name], CATEGORY_IDS[name])
            )
        dets.sort(key=lambda d: -d["score"])
        records.append(record(str(path), width, height, dets))
        coco_images.append(
            {"id": i + 1, "file_name": f"images/{path.name}", "width": width, "height": height}
        )
    errors = [
        {"image": str(images / "bad <b>.png"), "error": "not an image", "type": "ImageReadError"}
    ]
    output = root / "job"
    summary = write_inspect_folder(output, records, THRESHOLDS, errors=errors)
    gt = root / "gt.json"
    categories = [{"id": v, "name": k} for k, v in CATEGORY_IDS.items()]
    gt.write_text(
        json.dumps({"images": coco_images, "annotations": annotations, "categories": categories})
    )
    return {"output": output, "records": records, "summary": summary, "gt": gt, "images": images}
