"""The page's data: a compact, columnar picture of the job that report.js reads.

Per image a path (after a shared prefix), a size and a thumbnail status; per detection a class
index, the score as the record stores it, and a box in whole pixels. Raw result records go to
separate chunk files the page loads only when a person opens an image. At 100,000 images this
keeps the page's main data near 100 bytes an image (see scripts/bench_report.py).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from pathlib import Path
from typing import Any

from detection.core.errors import DetectionError
from detection.inference.model_files import read_model_meta
from detection.report.folder import InspectFolder
from detection.report.ground_truth import Labels, wilson_interval

PAYLOAD_VERSION = 1
MAX_ERRORS_SHOWN = 1000  # error lines listed on the page; the count covers them all


def checkpoint_info(settings: dict[str, Any]) -> dict[str, Any]:
    """Name, SHA-256 (first 12 hex digits), model and stored thresholds of the job's checkpoint;
    what cannot be read (a checkpoint moved since the job) is None."""
    path = Path(settings.get("checkpoint") or "")
    info: dict[str, Any] = {"name": path.name, "path": str(path), "sha256": None, "model": None}
    info["stored_thresholds"] = None
    if not path.is_file():
        return info
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    info["sha256"] = digest.hexdigest()[:12]
    try:
        meta = read_model_meta(path)
    except (DetectionError, OSError, ValueError, RuntimeError):
        return info
    info["model"] = meta.model_name
    info["stored_thresholds"] = {
        "per_class": dict(meta.thresholds.per_class),
        "fallback": meta.thresholds.fallback,
    }
    return info


def threshold_sources(folder: InspectFolder, checkpoint: dict[str, Any]) -> dict[str, str]:
    """Where each class's threshold came from: calibrated, the checkpoint's default or --threshold."""
    stored = checkpoint["stored_thresholds"]
    sources = {}
    for name, value in folder.thresholds.items():
        if stored is None:
            sources[name] = "job.json (checkpoint not readable)"
        elif name in stored["per_class"] and stored["per_class"][name] == value:
            sources[name] = "calibrated (checkpoint)"
        elif name not in stored["per_class"] and stored["fallback"] == value:
            sources[name] = "checkpoint default"
        else:
            sources[name] = "--threshold"
    return sources


def _common_prefix(paths: list[str]) -> str:
    """The longest shared leading folder (ending in a separator) of every path, or ''."""
    if not paths:
        return ""
    prefix = os.path.commonprefix(paths)
    cut = max(prefix.rfind("/"), prefix.rfind(os.sep))
    return prefix[: cut + 1]


def _labels_payload(labels: Labels) -> dict[str, Any]:
    image_level = labels.report["image_level"]
    per_class = labels.report["operating_point"]["per_class"]
    return {
        "defective": [-1 if d is None else int(d) for d in labels.defective],
        "outcome": [o for outcomes in labels.outcomes for o in outcomes],
        "labelled": [i is not None for i in labels.image_ids],
        "numGt": list(labels.num_gt.values()),
        "source": labels.gt.source,
        "imageLevel": {
            k: image_level[k]
            for k in (
                "images",
                "defective_images",
                "defect_free_images",
                "escapes",
                "false_rejects",
            )
        },
        "escapeInterval": wilson_interval(image_level["escapes"], image_level["defective_images"]),
        "falseRejectInterval": wilson_interval(
            image_level["false_rejects"], image_level["defect_free_images"]
        ),
        "perClass": {name: per_class[name] for name in labels.num_gt},
        "iou": labels.report["operating_point"]["iou_threshold"],
    }


def build_payload(
    folder: InspectFolder,
    thumb_status: list[int],
    *,
    band: float,
    chunk: int,
    labels: Labels | None = None,
    plots: list[str] | None = None,
) -> dict[str, Any]:
    """Everything report.js needs, as plain JSON types (see the module docstring)."""
    classes = folder.class_names
    class_index = {name: k for k, name in enumerate(classes)}
    job = folder.thresholds
    paths = [r["image"] for r in folder.records]
    root = _common_prefix(paths)
    offsets, cls, score, box, flip, size = [0], [], [], [], [], []
    for record in folder.records:
        size += [int(record["width"]), int(record["height"])]
        for det in record["detections"]:
            position = len(cls)
            cls.append(class_index[det["class_name"]])
            score.append(float(det["score"]))
            box += [round(float(v)) for v in det["bbox"]]
            if bool(det["fail"]) != (float(det["score"]) >= job[det["class_name"]]):
                flip.append(position)  # the job's own decision at its threshold (decisions.py)
        offsets.append(len(cls))
    checkpoint = checkpoint_info(folder.settings)
    summary_file = folder.path / "summary.json"
    date = dt.datetime.fromtimestamp(summary_file.stat().st_mtime, dt.timezone.utc)
    summary = folder.summary
    return {
        "version": PAYLOAD_VERSION,
        "meta": {
            "job": folder.path.resolve().name,
            "output": str(folder.path.resolve()),
            "checkpoint": {k: v for k, v in checkpoint.items() if k != "stored_thresholds"},
            "date": date.strftime("%Y-%m-%d %H:%M UTC"),
            "thresholdSources": threshold_sources(folder, checkpoint),
            "complete": summary.get("complete"),
            "missing": summary.get("missing", 0),
            "badLines": len(folder.bad_lines),
            "badLinesShown": folder.bad_lines[:MAX_ERRORS_SHOWN],
        },
        "classes": classes,
        "jobThresholds": [job[name] for name in classes],
        "reportThreshold": float(folder.settings.get("report_threshold") or 0.0),
        "band": band,
        "counts": {
            "inspected": int(summary.get("images", len(paths) + len(folder.errors))),
            "passed": int(summary.get("passed", 0)),
            "failed": int(summary.get("failed", 0)),
            "errors": int(summary.get("errors", len(folder.errors))),
        },
        "root": root,
        "paths": [p[len(root) :] for p in paths],
        "size": size,
        "thumb": thumb_status,
        "offsets": offsets,
        "cls": cls,
        "score": score,
        "box": box,
        "flip": flip,
        "errors": [
            [str(e.get("image")), str(e.get("error"))] for e in folder.errors[:MAX_ERRORS_SHOWN]
        ],
        "chunk": chunk,
        "gt": None if labels is None else _labels_payload(labels),
        "plots": plots or [],
    }
