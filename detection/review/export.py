"""`detection review export`: choose an inspect job's images for review and write the tasks.

Writes into the output folder: `label_studio_tasks.json` and `label_studio_config.xml`
(Label Studio), `cvat_annotations.xml` (CVAT for images 1.1) and `review_manifest.json` (what
was shown, for the import). With a server URL the tasks are also pushed into a project.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detection.core.coco_format import read_coco
from detection.core.errors import InvalidInputError
from detection.core.run_folder import output_folder
from detection.core.thresholds import Thresholds, ThresholdsLike
from detection.inspect.outputs import JOB_FILE
from detection.inspect.writer import iter_results
from detection.models.checkpoint import open_checkpoint
from detection.review.client import Client
from detection.review.cvat import write_cvat
from detection.review.label_studio import image_reference, labelling_config, make_task, write_tasks
from detection.review.manifest import Manifest, ModelBox, ReviewImage, box_id, new_export_id
from detection.review.merge import file_name
from detection.review.selection import DEFAULT_RULES, select_images, shown_detections

DEFAULT_BAND = 0.1


@dataclass
class ExportOptions:
    """How to choose images and where the reviewer's tool finds them."""

    rules: Sequence[str] = DEFAULT_RULES
    band: ThresholdsLike = DEFAULT_BAND  # half-width of the uncertain band, per class or all
    audit_fraction: float = 0.05
    seed: int = 0
    limit: int | None = None
    ground_truth: str | None = None  # a COCO json, for the `disagree` rule
    ground_truth_images: str | None = None  # the folder its file_names are relative to
    listed: Collection[str] = ()
    document_root: str | None = None  # Label Studio local files root (default: common folder)
    url_prefix: str | None = None  # serve images from here instead of local files
    cvat_root: str | None = None  # CVAT names images by their path below this (default: name)


def read_job(folder: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An inspect folder's settings (job.json) and its result records, one per image.

    Raises:
        InvalidInputError: not an inspect output folder.
    """
    job = Path(folder) / JOB_FILE
    if not job.is_file():
        raise InvalidInputError(folder, f"not an inspect output folder (no {JOB_FILE})")
    settings = json.loads(job.read_text(encoding="utf-8"))
    records: dict[str, dict[str, Any]] = {}
    for record in iter_results(folder):
        records.setdefault(record["image"], record)
    return settings, list(records.values())


def model_version(checkpoint: str | Path) -> str:
    """The checkpoint's file name and the first 12 hex digits of its SHA-256."""
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return f"{Path(checkpoint).name}@{digest.hexdigest()[:12]}"


def _defect_images(options: ExportOptions, records: list[dict[str, Any]]) -> dict[str, bool] | None:
    if options.ground_truth is None:
        return None
    data = read_coco(options.ground_truth)
    root = options.ground_truth_images or str(Path(options.ground_truth).parent)
    with_boxes = {a["image_id"] for a in data["annotations"]}
    known = {i["file_name"]: i["id"] in with_boxes for i in data["images"]}
    found = {}
    for record in records:
        try:
            name = file_name(record["image"], root)
        except ValueError:
            continue
        if name in known:
            found[record["image"]] = known[name]
    return found


def export_review(
    inspect_folder: str | Path,
    out: str | Path,
    options: ExportOptions,
    *,
    url: str | None = None,
    token: str | None = None,
    project_title: str | None = None,
) -> Manifest:
    """Choose images, write the task files and manifest into `out`; push them when `url` is given.

    Raises:
        InvalidInputError: not an inspect folder, a bad ground truth.
        ValueError: a bad rule, limit, band or listed image; an image outside the roots given.
        LabelStudioError: the server refused the project or the import.
    """
    settings, records = read_job(inspect_folder)
    meta, _ = open_checkpoint(settings["checkpoint"], mmap=True)
    classes = dict(zip(meta.class_names, meta.category_ids, strict=True))
    thresholds = {name: float(settings["thresholds"][name]) for name in meta.class_names}
    band = Thresholds.coerce(options.band).resolve(meta.class_names)
    chosen = select_images(
        records, thresholds, band, options.rules, audit_fraction=options.audit_fraction,
        seed=options.seed, limit=options.limit, listed=options.listed,
        defect_images=_defect_images(options, records),
    )  # fmt: skip
    version = model_version(settings["checkpoint"])
    export_id = new_export_id([c.record["image"] for c in chosen], version)
    images = []
    for c in chosen:
        shown = shown_detections(c.record, thresholds, band)
        boxes = tuple(
            ModelBox(box_id(export_id, c.record["image"], i), d["class_name"],
                     tuple(d["bbox"]), d["score"], d["fail"])
            for i, d in enumerate(shown)
        )  # fmt: skip
        images.append(
            ReviewImage(c.record["image"], int(c.record["width"]), int(c.record["height"]),
                        c.record["decision"], c.reasons, c.uncertainty, boxes)
        )  # fmt: skip
    passed = sum(r["decision"] == "pass" for r in records)
    audited = sum("audit" in c.reasons for c in chosen)
    manifest = Manifest(
        export_id=export_id, model_version=version, classes=classes, thresholds=thresholds,
        band=band, lot={"images": len(records), "passed": passed, "failed": len(records) - passed},
        audit={"fraction": options.audit_fraction, "seed": options.seed, "sampled": audited},
        images=images,
    )  # fmt: skip
    folder = output_folder(Path(out))
    root = options.document_root or _common_folder([i.image for i in images])
    tasks = [
        make_task(item, manifest, image_reference(item.image, root, options.url_prefix))
        for item in images
    ]
    write_tasks(folder, tasks, labelling_config(list(classes)))
    write_cvat(folder, manifest, options.cvat_root)
    if url is not None:
        client = Client(url, token or "")
        project = client.project(
            project_title or f"review {export_id}", labelling_config(list(classes))
        )
        client.import_tasks(project["id"], tasks)
        manifest.project_id = int(project["id"])
    manifest.write(folder)  # last: an export without a manifest is visibly unfinished
    return manifest


def _common_folder(images: list[str]) -> str:
    import os

    if not images:
        return os.getcwd()
    return os.path.commonpath([os.path.dirname(os.path.abspath(i)) for i in images])
