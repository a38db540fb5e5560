"""A small inspect output folder for the review tests, written by hand so that every score, box
and decision is known: two classes, thresholds 0.5, and the tiny images the records name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from detection.core.thresholds import Thresholds
from detection.models.checkpoint import CheckpointMeta

CLASSES = {"scratch": 3, "spot": 5}  # category ids on purpose not 1..K
SIZE = (80, 60)  # width, height


def _det(name: str, score: float, bbox: list[float], threshold: float = 0.5) -> dict[str, Any]:
    return {"bbox": bbox, "score": score, "label": list(CLASSES).index(name) + 1,
            "class_name": name, "category_id": CLASSES[name], "fail": score >= threshold}  # fmt: skip


# image stem -> detections; the decision follows from the 0.5 thresholds.
DETECTIONS: dict[str, list[dict[str, Any]]] = {
    "a0": [_det("scratch", 0.9, [10, 10, 30, 30]), _det("spot", 0.45, [40, 35, 55, 50])],
    "a1": [_det("spot", 0.8, [5, 5, 25, 20])],
    "a2": [_det("scratch", 0.42, [20, 30, 40, 50])],
    "a3": [_det("scratch", 0.1, [60, 40, 70, 50])],  # below the band: not shown
    **{f"p{i}": [] for i in range(6)},
}


def write_job(folder: Path, images: Path) -> Path:
    """Write the inspect folder `folder` (job.json, checkpoint, one results shard) over PNG
    images written into `images`; returns `folder`."""
    images.mkdir(parents=True, exist_ok=True)
    (folder / "results").mkdir(parents=True, exist_ok=True)
    meta = CheckpointMeta(
        model_name="fasterrcnn_resnet18_fpn", num_classes=2, class_names=list(CLASSES),
        category_ids=list(CLASSES.values()), model_args={}, thresholds=Thresholds(0.5),
    )  # fmt: skip
    checkpoint = folder / "best.ckpt"
    torch.save({"state_dict": {}, "detection": meta.to_dict()}, checkpoint)
    thresholds = dict.fromkeys(CLASSES, 0.5)
    settings = {"checkpoint": str(checkpoint), "thresholds": thresholds, "report_threshold": 0.05}
    (folder / "job.json").write_text(json.dumps(settings), encoding="utf-8")
    lines = []
    rng = np.random.default_rng(0)
    for stem, detections in DETECTIONS.items():
        path = images / f"{stem}.png"
        pixels = rng.integers(0, 255, size=(SIZE[1], SIZE[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        decision = "fail" if any(d["fail"] for d in detections) else "pass"
        lines.append({"image": str(path), "width": SIZE[0], "height": SIZE[1],
                      "decision": decision, "detections": detections})  # fmt: skip
    shard = folder / "results" / "part-00000-00000.jsonl"
    shard.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return folder


def write_base(path: Path, images: Path) -> Path:
    """A training json with one image of its own (and its file) beside the lot's images."""
    pixels = np.zeros((SIZE[1], SIZE[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "train0.png")
    data = {
        "images": [{"id": 4, "file_name": "train0.png", "width": SIZE[0], "height": SIZE[1]}],
        "annotations": [{"id": 9, "image_id": 4, "category_id": 5, "bbox": [1, 2, 10, 10],
                         "area": 100, "iscrowd": 0}],
        "categories": [{"id": 5, "name": "spot"}, {"id": 3, "name": "scratch"}],
    }  # fmt: skip
    path.write_text(json.dumps(data), encoding="utf-8")
    return path
