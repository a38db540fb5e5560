"""`detection review import`: a Label Studio or CVAT export back into diff, COCO and report.

Writes into the output folder, each file atomically, after every check has passed:
`review_diff.jsonl` (one line per reviewed image), `corrected.json` (the reviewed images as
COCO), `merged.json` (with a training json given), `review_report.json` and `.md`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detection.core.coco_format import LINT_RULES, raise_first, read_coco, validate
from detection.core.run_folder import output_folder, write_atomic
from detection.review.cvat import read_cvat
from detection.review.diff import diff_image
from detection.review.label_studio import read_export
from detection.review.manifest import read_manifest
from detection.review.merge import corrected_coco, merge_coco
from detection.review.report import build_report, write_report
from detection.review.reviewed import ANNOTATED, STATUSES, ReviewedTask

DIFF_FILE = "review_diff.jsonl"
CORRECTED_FILE = "corrected.json"
MERGED_FILE = "merged.json"


@dataclass
class ImportOptions:
    """Where the images live for COCO, and how to merge."""

    images_root: str | None = None  # COCO file_names are paths below it (needed with `base`)
    base: str | None = None  # a training json to merge into
    replace_reviewed: bool = False
    extend_classes: bool = False
    cvat_root: str | None = None  # as given to the export


def read_review(path: str | Path, manifest_path: str | Path, cvat_root: str | None = None):
    """(manifest, tasks) of an export file: `.xml` is CVAT for images 1.1, else Label Studio JSON."""
    manifest = read_manifest(manifest_path)
    if str(path).lower().endswith(".xml"):
        return manifest, read_cvat(path, manifest, cvat_root)
    return manifest, read_export(path, manifest)


def import_review(
    export: str | Path, manifest_path: str | Path, out: str | Path, options: ImportOptions
) -> dict[str, Any]:
    """Import a review export; returns the report (also written to `out`).

    Raises:
        InvalidInputError: a bad export or manifest (naming the task and field), a bad training
            json, a class or image conflict in the merge.
        ValueError: an image outside the images root.
    """
    manifest, tasks = read_review(export, manifest_path, options.cvat_root)
    statuses = Counter({s: 0 for s in STATUSES})
    kept: list[ReviewedTask] = []
    for task in tasks:
        if task.status == ANNOTATED and not os.path.exists(task.image):
            statuses["image_missing"] += 1  # the file is gone: no COCO entry can point at it
            continue
        statuses[task.status] += 1
        if task.status == ANNOTATED:
            kept.append(task)
    answered = {t.image for t in tasks}
    statuses["not_in_export_file"] = sum(i.image not in answered for i in manifest.images)
    by_image = manifest.by_image()
    diffs = [diff_image(by_image[t.image], t) for t in kept]
    base = read_coco(options.base) if options.base else None
    root = options.images_root
    if root is None and base is not None:
        raise ValueError("merging into a training json needs the folder its file_names are "
                         "relative to (--images-root)")  # fmt: skip
    if root is None:
        root = _common([t.image for t in kept])
    corrected = corrected_coco(kept, manifest, root)
    raise_first(validate(corrected, LINT_RULES), CORRECTED_FILE)
    merged_counts: dict[str, int] = {}
    merged = None
    if base is not None:
        merged, merged_counts = merge_coco(
            base, corrected, base_name=str(options.base), replace=options.replace_reviewed,
            extend_classes=options.extend_classes,
        )  # fmt: skip
        raise_first(validate(merged, LINT_RULES), MERGED_FILE)
    report = build_report(manifest, diffs, dict(statuses), merged_counts)
    report["images_root"] = os.path.abspath(root)
    folder = output_folder(Path(out))
    lines = "".join(json.dumps(d.to_dict()) + "\n" for d in diffs)
    write_atomic(folder / DIFF_FILE, lines)
    write_atomic(folder / CORRECTED_FILE, json.dumps(corrected, indent=1) + "\n")
    if merged is not None:
        write_atomic(folder / MERGED_FILE, json.dumps(merged, indent=1) + "\n")
    write_report(folder, report)
    return report


def _common(images: list[str]) -> str:
    if not images:
        return os.getcwd()
    return os.path.commonpath([os.path.dirname(os.path.abspath(i)) for i in images])
