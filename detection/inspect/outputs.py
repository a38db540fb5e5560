"""What a job folder adds up to: summary.json, and coco_results.json and results.csv on request.

All three are rebuilt from the complete result lines of every rank and run, so they hold every
image exactly once however often the job was restarted.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from detection.core.coco_format import results
from detection.core.run_folder import temporary_path, write_atomic, writing
from detection.inspect.config import InspectConfig
from detection.inspect.rank import RankStats
from detection.inspect.writer import bad_lines, iter_errors, iter_results

JOB_FILE = "job.json"
SUMMARY_FILE = "summary.json"
COCO_FILE = "coco_results.json"
CSV_FILE = "results.csv"
CSV_COLUMNS = (
    "image", "width", "height", "decision", "class_name", "category_id", "score",
    "x1", "y1", "x2", "y2", "fail",
)  # fmt: skip


def _class_counts() -> dict[str, int]:
    return {"detections": 0, "defects": 0, "failed_images": 0}


def summarize_job(
    config: InspectConfig, inputs: Sequence[str], runs: Sequence[RankStats], seconds: float
) -> dict[str, Any]:
    """Count everything in the output folder (all ranks, all runs) and write summary.json, and
    the COCO results and CSV when the config asks."""
    output = Path(config.output)
    settings = json.loads((output / JOB_FILE).read_text())
    classes = {name: _class_counts() for name in settings["thresholds"]}
    image_ids = {path: i + 1 for i, path in enumerate(inputs)}
    seen: set[str] = set()
    duplicates = passed = failed = 0
    coco_parts: list[str] = []
    csv_rows: list[list[Any]] = []
    for record in iter_results(output):
        image = record["image"]
        if image in seen:
            duplicates += 1
            continue
        seen.add(image)
        passed += record["decision"] == "pass"
        failed += record["decision"] == "fail"
        failing_classes = set()
        for det in record["detections"]:
            counts = classes.setdefault(det["class_name"], _class_counts())
            counts["detections"] += 1
            if det["fail"]:
                counts["defects"] += 1
                failing_classes.add(det["class_name"])
        for name in failing_classes:
            classes[name]["failed_images"] += 1
        if config.coco_results:
            image_id = image_ids.setdefault(image, len(image_ids) + 1)
            coco_parts.extend(_coco_entry(image, image_id, det) for det in record["detections"])
        if config.csv:
            csv_rows.extend(_csv_rows(record))
    errors = 0
    for record in iter_errors(output):
        if record["image"] in seen:
            duplicates += 1
            continue
        seen.add(record["image"])
        errors += 1
    if config.coco_results:
        write_atomic(output / COCO_FILE, "[\n" + ",\n".join(coco_parts) + "\n]\n")
    if config.csv:
        _write_csv(output / CSV_FILE, csv_rows)
    inspected_now = sum(r.inspected + r.errors for r in runs)
    # Ranks run side by side: the rate is the images of all of them over the slowest loop.
    loop_seconds = max((r.seconds for r in runs), default=0.0)
    missing = sum(1 for path in inputs if path not in seen)
    # Only a rank drops its own bad lines (it alone writes those files): another node's may
    # still hold some, and then the job is not complete.
    unsound = len(bad_lines(output))
    summary = {
        "output": str(output),
        "inputs": len(inputs),
        "images": passed + failed + errors,
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "missing": missing,
        "duplicates": duplicates,
        "bad_lines": unsound,
        "complete": missing == 0 and duplicates == 0 and unsound == 0,
        "classes": classes,
        "thresholds": settings["thresholds"],
        "report_threshold": settings["report_threshold"],
        "images_per_s": round(inspected_now / loop_seconds, 3) if loop_seconds > 0 else None,
        "this_run": {
            "images": inspected_now,  # inspected and unreadable together
            "inspected": sum(r.inspected for r in runs),
            "errors": sum(r.errors for r in runs),
            "bad_lines_dropped": sum(r.bad_lines for r in runs),
            "seconds": round(seconds, 3),  # wall time, model loading included
            "loop_seconds": round(loop_seconds, 3),
            "ranks": [asdict(r) for r in runs],
        },
    }
    write_atomic(output / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def _coco_entry(image: str, image_id: int, det: dict[str, Any]) -> str:
    (result,) = results(image_id, [det["bbox"]], [det["score"]], [det["category_id"]], decimals=2)
    return json.dumps({"image_id": image_id, "file_name": image, **result})


def _csv_rows(record: dict[str, Any]) -> list[list[Any]]:
    head = [record["image"], record["width"], record["height"], record["decision"]]
    if not record["detections"]:
        return [head + [""] * (len(CSV_COLUMNS) - len(head))]
    return [
        head + [d["class_name"], d["category_id"], d["score"], *d["bbox"], int(d["fail"])]
        for d in record["detections"]
    ]


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    tmp = temporary_path(path)
    try:
        with writing(path), open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
        with writing(path):
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already when the replace succeeded
