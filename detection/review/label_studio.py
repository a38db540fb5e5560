"""Label Studio's formats: the labelling config, Basic Label Studio JSON tasks with the model's
boxes as predictions, and reading a project's export (full JSON or JSON-MIN) back.

Boxes are percent of the image (x, y, width, height of the top-left corner), as Label Studio
stores them; `original_width`/`original_height` say the pixel size they refer to.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from detection.core.errors import InvalidInputError
from detection.core.files import check_regular_file
from detection.core.run_folder import write_atomic
from detection.review.manifest import Manifest, ReviewImage
from detection.review.reviewed import ANNOTATED, SKIPPED, UNANNOTATED, ReviewedBox, ReviewedTask

FROM_NAME = "label"  # the RectangleLabels control
TO_NAME = "image"  # the Image object
IMAGE_KEY = "detection_image"  # task data: the exported image, as the manifest names it
EXPORT_KEY = "detection_export"  # task data: the export id, to refuse another project's export
BOX_TYPE = "rectanglelabels"


def labelling_config(class_names: Sequence[str]) -> str:
    """The labelling config XML: one image, rectangles with one label per class."""
    labels = "\n".join(f"    <Label value={quoteattr(name)}/>" for name in class_names)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n'
        f"{labels}\n"
        "  </RectangleLabels>\n"
        "</View>\n"
    )


def image_reference(image: str, document_root: str | None, url_prefix: str | None) -> str:
    """`data.image` of a task: `url_prefix` + the path below `document_root` when a prefix is
    given, else Label Studio's local-files URL (the server needs
    LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set
    to `document_root`).

    Raises:
        ValueError: the image does not lie below `document_root`.
    """
    path = os.path.abspath(image)
    root = os.path.abspath(document_root or os.path.dirname(path))
    relative = os.path.relpath(path, root)
    if relative.startswith(".."):
        raise ValueError(f"{image} does not lie below the document root {root}")
    relative = relative.replace(os.sep, "/")
    if url_prefix:
        return url_prefix.rstrip("/") + "/" + quote(relative)
    return "/data/local-files/?d=" + quote(relative)


def percent_value(bbox: Sequence[float], width: int, height: int) -> dict[str, Any]:
    """A pixel xyxy box as Label Studio's percent value."""
    x1, y1, x2, y2 = bbox
    return {
        "x": 100.0 * x1 / width,
        "y": 100.0 * y1 / height,
        "width": 100.0 * (x2 - x1) / width,
        "height": 100.0 * (y2 - y1) / height,
        "rotation": 0,
    }


def pixel_box(value: Mapping[str, Any], width: int, height: int) -> tuple[float, ...]:
    """Label Studio's percent value as a pixel xyxy box, clipped to the image."""
    x1 = float(value["x"]) * width / 100.0
    y1 = float(value["y"]) * height / 100.0
    x2 = x1 + float(value["width"]) * width / 100.0
    y2 = y1 + float(value["height"]) * height / 100.0
    return (
        min(max(x1, 0.0), width), min(max(y1, 0.0), height),
        min(max(x2, 0.0), width), min(max(y2, 0.0), height),
    )  # fmt: skip


def make_task(item: ReviewImage, manifest: Manifest, image_url: str) -> dict[str, Any]:
    """One task: the image, keys back to the export, and the shown boxes as a prediction."""
    result = [
        {
            "id": box.id,
            "type": BOX_TYPE,
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "original_width": item.width,
            "original_height": item.height,
            "image_rotation": 0,
            "score": box.score,
            "value": {
                **percent_value(box.bbox, item.width, item.height),
                BOX_TYPE: [box.class_name],
            },
        }
        for box in item.boxes
    ]
    return {
        "data": {
            "image": image_url,
            IMAGE_KEY: item.image,
            EXPORT_KEY: manifest.export_id,
            "decision": item.decision,
            "reasons": ",".join(item.reasons),
        },
        "predictions": [
            {"model_version": manifest.model_version, "score": item.uncertainty, "result": result}
        ],
    }


def load_export(path: str | Path) -> Any:
    """The parsed JSON of an export file; a cut-short file is a one-line error.

    Raises:
        InvalidInputError: missing, truncated or malformed file.
    """
    check_regular_file(path)
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        # A string still open at the end is reported at its start, not at the end.
        cut = error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string")
        problem = "truncated file (it ends in the middle of" if cut else "malformed JSON ("
        raise InvalidInputError(
            path, f"{problem} line {error.lineno} column {error.colno}: {error.msg})"
        ) from None


def read_export(path: str | Path, manifest: Manifest) -> list[ReviewedTask]:
    """The tasks of a Label Studio export (full JSON or JSON-MIN), mapped to exported images.

    Of several submitted annotations of one task the latest (by `updated_at`, then id) counts.

    Raises:
        InvalidInputError: naming the task id and field: a truncated file, duplicate task ids,
            a task of another export or project, a task whose image is not in the export, a
            region that is not a rectangle, a rotated box, a label not in the class list.
    """
    data = load_export(path)
    if not isinstance(data, list):
        raise InvalidInputError(path, "a Label Studio export is a JSON list of tasks")
    tasks: list[ReviewedTask] = []
    seen: set[str] = set()
    for index, task in enumerate(data):
        if not isinstance(task, dict) or "id" not in task:
            raise InvalidInputError(path, "not a task (no 'id')", record=f"tasks[{index}]")
        task_id = str(task["id"])
        record = f"task {task_id}"
        if task_id in seen:
            raise InvalidInputError(path, "duplicate task id", record=record, field="id")
        seen.add(task_id)
        full = "data" in task
        fields = task["data"] if full else task
        item = _exported_image(path, record, fields, manifest)
        if full:
            tasks.append(_full_task(path, record, task, item, manifest))
        else:
            tasks.append(_min_task(path, record, task, item, manifest))
    return tasks


def _exported_image(path: str | Path, record: str, fields: Any, manifest: Manifest) -> ReviewImage:
    if not isinstance(fields, dict):
        raise InvalidInputError(path, "must be an object", record=record, field="data")
    if fields.get(EXPORT_KEY) != manifest.export_id:
        raise InvalidInputError(
            path,
            f"belongs to export {fields.get(EXPORT_KEY)!r}, not {manifest.export_id!r} "
            "(an export of another project?)",
            record=record,
            field=f"data.{EXPORT_KEY}",
        )
    item = manifest.by_image().get(fields.get(IMAGE_KEY))
    if item is None:
        raise InvalidInputError(
            path,
            f"image {fields.get(IMAGE_KEY)!r} is not in the review export",
            record=record,
            field=f"data.{IMAGE_KEY}",
        )
    return item


def _full_task(
    path: str | Path, record: str, task: dict, item: ReviewImage, manifest: Manifest
) -> ReviewedTask:
    if manifest.project_id is not None and task.get("project") not in (None, manifest.project_id):
        raise InvalidInputError(
            path, f"is of project {task['project']}, not {manifest.project_id}",
            record=record, field="project",
        )  # fmt: skip
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise InvalidInputError(path, "must be a list", record=record, field="annotations")
    submitted = [
        (position, a)
        for position, a in enumerate(annotations)
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not submitted:
        status = SKIPPED if annotations else UNANNOTATED
        return ReviewedTask(str(task["id"]), item.image, status)
    position, latest = max(
        submitted, key=lambda p: (str(p[1].get("updated_at") or ""), p[1].get("id") or 0)
    )
    prefix = f"annotations[{position}].result"
    regions = latest.get("result") or []
    boxes = [
        _region_box(path, record, f"{prefix}[{i}]", region, item, manifest, keep_id=True)
        for i, region in enumerate(regions)
    ]
    return ReviewedTask(str(task["id"]), item.image, ANNOTATED, boxes)


def _min_task(
    path: str | Path, record: str, task: dict, item: ReviewImage, manifest: Manifest
) -> ReviewedTask:
    if task.get("annotation_id") is None:  # JSON-MIN lists unanswered tasks with nulls
        return ReviewedTask(str(task["id"]), item.image, UNANNOTATED)
    regions = task.get(FROM_NAME) or []
    if not isinstance(regions, list):
        raise InvalidInputError(path, "must be a list of regions", record=record, field=FROM_NAME)
    boxes = []
    for i, region in enumerate(regions):
        if not isinstance(region, dict) or BOX_TYPE not in region:
            raise InvalidInputError(
                path, "not a rectangle with a label (a polygon or other region?)",
                record=record, field=f"{FROM_NAME}[{i}]",
            )  # fmt: skip
        wrapped = {"type": BOX_TYPE, "value": region}
        boxes.append(_region_box(path, record, f"{FROM_NAME}[{i}]", wrapped, item, manifest, False))
    return ReviewedTask(str(task["id"]), item.image, ANNOTATED, boxes)


def _region_box(
    path: str | Path,
    record: str,
    where: str,
    region: Any,
    item: ReviewImage,
    manifest: Manifest,
    keep_id: bool,
) -> ReviewedBox:
    def bad(field: str, problem: str) -> InvalidInputError:
        return InvalidInputError(path, problem, record=record, field=f"{where}.{field}")

    if not isinstance(region, dict):
        raise bad("type", "not a region object")
    if region.get("type") != BOX_TYPE:
        raise bad("type", f"{region.get('type')!r} regions are not boxes (polygons and other "
                          f"region types cannot be imported); only {BOX_TYPE!r}")  # fmt: skip
    value = region.get("value")
    if not isinstance(value, dict):
        raise bad("value", "missing")
    rotation = value.get("rotation", 0) or 0
    if rotation != 0:
        raise bad("value.rotation", f"rotated box ({rotation} degrees); only upright boxes")
    labels = value.get(BOX_TYPE)
    if not isinstance(labels, list) or len(labels) != 1:
        raise bad(f"value.{BOX_TYPE}", f"needs exactly one label, got {labels!r}")
    if labels[0] not in manifest.classes:
        raise bad(f"value.{BOX_TYPE}", f"label {labels[0]!r} is not in the class list "
                                       f"{list(manifest.classes)}")  # fmt: skip
    for key in ("x", "y", "width", "height"):
        number = value.get(key)
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise bad(f"value.{key}", f"must be a number, got {number!r}")
    box = pixel_box(value, item.width, item.height)
    return ReviewedBox(labels[0], box, str(region["id"]) if keep_id and "id" in region else None)


def write_tasks(folder: Path, tasks: list[dict[str, Any]], config: str) -> tuple[Path, Path]:
    """Write `label_studio_tasks.json` and `label_studio_config.xml` atomically."""
    tasks_path = folder / "label_studio_tasks.json"
    config_path = folder / "label_studio_config.xml"
    write_atomic(tasks_path, json.dumps(tasks, indent=1) + "\n")
    write_atomic(config_path, config)
    return tasks_path, config_path
