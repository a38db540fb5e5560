"""A synthetic inspect folder with known content, written with the inspect job's own writers.

For the report's tests and benchmark: no model runs, but the folder is byte-for-byte what
`detection inspect` writes (job.json, results shards, errors.jsonl, summary.json).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detection.inspect.config import InspectConfig
from detection.inspect.outputs import JOB_FILE, summarize_job
from detection.inspect.writer import RESULTS_DIR, JsonlAppender, ShardedJsonlWriter, error_file


def detection(
    class_name: str, score: float, bbox: Sequence[float], threshold: float, label: int = 1
) -> dict[str, Any]:
    """One stored detection as the Detector writes it (``fail`` = score >= threshold)."""
    return {
        "bbox": [round(float(v), 2) for v in bbox],
        "score": round(float(score), 5),
        "label": int(label),
        "class_name": class_name,
        "category_id": int(label),
        "fail": float(score) >= threshold,
    }


def record(image: str, width: int, height: int, detections: list[dict]) -> dict[str, Any]:
    """One result line: ``decision`` follows the detections' ``fail`` flags."""
    failed = any(d["fail"] for d in detections)
    return {
        "image": image,
        "width": int(width),
        "height": int(height),
        "decision": "fail" if failed else "pass",
        "detections": detections,
    }


def write_inspect_folder(
    output: str | Path,
    records: Sequence[dict[str, Any]],
    thresholds: dict[str, float],
    *,
    errors: Sequence[dict[str, str]] = (),
    checkpoint: str = "model.ckpt",
    report_threshold: float = 0.05,
    shard_lines: int = 10000,
) -> dict[str, Any]:
    """Write an inspect folder holding ``records`` (and ``errors``: {"image", "error", "type"});
    returns its summary."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    settings = {
        "checkpoint": str(checkpoint),
        "checkpoint_size": None,
        "thresholds": dict(thresholds),
        "report_threshold": report_threshold,
        "tile": None,
        "overlap": None,
        "max_pixels": None,
    }
    (output / JOB_FILE).write_text(json.dumps(settings, indent=2), encoding="utf-8")
    writer = ShardedJsonlWriter(output / RESULTS_DIR, 0, shard_lines, fsync=False)
    writer.write(list(records))
    writer.close()
    appender = JsonlAppender(error_file(output, 0), fsync=False)
    appender.write(list(errors))
    appender.close()
    inputs = [r["image"] for r in records] + [e["image"] for e in errors]
    config = InspectConfig(checkpoint=str(checkpoint), inputs=[], output=str(output))
    return summarize_job(config, inputs, [], 0.0)
