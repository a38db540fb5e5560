"""COCO records: read a json, validate it into findings, and turn detections into COCO results.

One set of rules and one wording for every reader: `data lint` reports all findings; datasets,
`detection evaluate` and the converters raise the first error as a one-line InvalidInputError
naming the file, the record (``annotations[3] (id 7)``) and the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detection.core.errors import InvalidInputError
from detection.core.files import check_regular_file

ERROR = "error"
WARNING = "warning"

# kind -> severity; the order is the order of lint's summary table.
KINDS = {
    "malformed-json": ERROR,
    "missing-key": ERROR,
    "bad-value": ERROR,
    "duplicate-id": ERROR,
    "unknown-image": ERROR,
    "unknown-category": ERROR,
    "degenerate-box": ERROR,
    "box-outside-image": ERROR,
    "missing-image": ERROR,
    "unreadable-image": ERROR,
    "size-mismatch": ERROR,
    "duplicate-file-name": WARNING,
    "unused-category": WARNING,
}
SECTIONS = ("images", "annotations", "categories")
# Boxes may overshoot by a hair: converters that round-trip through floats land at 640.0000001.
EDGE_TOLERANCE = 1e-3


class MalformedJsonError(InvalidInputError):
    """A file is not valid JSON; ``record`` says where (line and column)."""


@dataclass(frozen=True)
class Finding:
    """One problem: how bad, what kind, which record and field, and a readable message."""

    severity: str
    kind: str
    record: str
    field: str | None
    message: str

    def __str__(self) -> str:
        where = self.record + (f" field '{self.field}'" if self.field else "")
        return f"{self.severity}: {self.kind}: {where}: {self.message}"


@dataclass(frozen=True)
class Rules:
    """What a reader needs of a COCO file: required keys per section, and how strict boxes are."""

    images: tuple[str, ...]
    annotations: tuple[str, ...]
    categories: tuple[str, ...]
    positive_boxes: bool  # a zero width or height is a finding (a negative one always is)
    boxes_inside: bool  # a box must lie inside its image (when the image's size is known)


# lint: everything COCO requires. Datasets clip boxes and drop empty ones (with a warning),
# and read a missing image size from the file; evaluation needs only ids, labels and boxes.
LINT_RULES = Rules(
    ("id", "file_name", "width", "height"), ("id", "image_id", "category_id", "bbox"),
    ("id", "name"), positive_boxes=True, boxes_inside=True,
)  # fmt: skip
DATASET_RULES = Rules(
    ("id", "file_name"), ("image_id", "category_id", "bbox"), ("id", "name"),
    positive_boxes=False, boxes_inside=False,
)  # fmt: skip
# converters write every image and box they read, in another format: sizes and real boxes needed;
# boxes outside the image are clipped or refused by the converter's own option.
CONVERTER_RULES = Rules(
    ("id", "file_name", "width", "height"), ("image_id", "category_id", "bbox"), ("id", "name"),
    positive_boxes=True, boxes_inside=False,
)  # fmt: skip
EVALUATION_RULES = Rules(
    ("id",), ("image_id", "category_id", "bbox"), ("id",), positive_boxes=False, boxes_inside=False
)


def is_int(value: Any) -> bool:
    """An integer (Python or numpy), not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def is_number(value: Any) -> bool:
    """A finite real number (Python or numpy), not a bool."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file raises InvalidInputError."""
    check_regular_file(path)  # a FIFO or device would block or never end
    try:
        with open(path, "rb") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InvalidInputError(path, "file not found") from None
    except json.JSONDecodeError as error:
        raise MalformedJsonError(
            path, f"malformed JSON: {error.msg}", record=f"line {error.lineno} column {error.colno}"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(path, f"cannot read the file ({error})") from None


def read_coco(path: str | Path, rules: Rules = DATASET_RULES) -> dict[str, Any]:
    """Read a COCO json and raise its first error under ``rules`` (see `raise_first`)."""
    data = read_json(path)
    raise_first(validate(data, rules), path)
    return data


def raise_first(findings: Iterable[Finding], source: str | Path) -> None:
    """Raise the first error finding as a one-line InvalidInputError; warnings pass."""
    for finding in findings:
        if finding.severity == ERROR:
            raise InvalidInputError(
                source, finding.message, record=finding.record, field=finding.field
            )


def validate(data: Any, rules: Rules = LINT_RULES) -> list[Finding]:
    """Every problem of a parsed COCO file under ``rules``, in file order by section."""
    return _Validator(rules).run(data)


def size_mismatch(
    declared: tuple[float, float], actual: tuple[int, int], path: str | Path, how: str = "header"
) -> str | None:
    """The one message for an image whose (width, height) is not the one its record declares,
    or None when they agree; ``how`` says where the actual size came from (header, decoding)."""
    if (float(actual[0]), float(actual[1])) == (float(declared[0]), float(declared[1])):
        return None
    return (
        f"the json says {declared[0]:g}x{declared[1]:g} but the {how} of {path} "
        f"says {actual[0]}x{actual[1]}"
    )


def record_name(section: str, index: int, item: Any) -> str:
    """How messages name a record: ``annotations[3] (id 7)``."""
    name = f"{section}[{index}]"
    return name + f" (id {item['id']!r})" if isinstance(item, dict) and "id" in item else name


def image_files(data: Any) -> list[tuple[str, str, tuple[int, int]]]:
    """(record name, file_name, (width, height)) of every well-formed image, the first record
    of each file name only: the files worth opening."""
    validator = _Validator(LINT_RULES)
    images = validator.by_id("images", validator.records(data, "images"))
    sizes = validator.check_images(images)
    files: dict[str, tuple[str, str, tuple[int, int]]] = {}
    for image_id, (name, image) in images.items():
        file_name = image["file_name"]
        if image_id in sizes and isinstance(file_name, str) and file_name:
            files.setdefault(file_name, (name, file_name, sizes[image_id]))
    return list(files.values())


def box_problem(box: Any, positive: bool) -> tuple[str, str] | None:
    """(kind, message) when ``box`` is not a valid ``[x, y, w, h]``, else None."""
    if not (
        isinstance(box, list | tuple | np.ndarray)
        and len(box) == 4
        and all(is_number(v) for v in box)
    ):
        return "bad-value", f"must be 4 finite numbers [x, y, w, h], got {box!r}"
    w, h = box[2], box[3]
    if w < 0 or h < 0 or (positive and (w == 0 or h == 0)):
        bound = "> 0" if positive else ">= 0"
        return "degenerate-box", f"width and height must be {bound}, got w={w:g} h={h:g}"
    return None


def outside_message(box: Sequence[float], width: float, height: float, image: Any = "") -> str:
    """How a finding says that a box leaves its image."""
    x, y, w, h = box
    of = f"image {image} of size" if image != "" else "its image of size"
    return f"[{x:g}, {y:g}, {w:g}, {h:g}] exceeds {of} {width:g}x{height:g}"


def outside_image(box: Sequence[float], width: float, height: float) -> bool:
    """Whether an ``[x, y, w, h]`` box leaves a ``width`` x ``height`` image (beyond a hair)."""
    x, y, w, h = box
    eps = EDGE_TOLERANCE
    return x < -eps or y < -eps or x + w > width + eps or y + h > height + eps


class _Validator:
    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.findings: list[Finding] = []

    def add(self, kind: str, record: str, field: str | None, message: str) -> None:
        self.findings.append(Finding(KINDS[kind], kind, record, field, message))

    def run(self, data: Any) -> list[Finding]:
        if not isinstance(data, dict):
            self.add(
                "malformed-json", "top level", None, f"must be an object, got {type(data).__name__}"
            )
            return self.findings
        images = self.by_id("images", self.records(data, "images"))
        annotations = self.records(data, "annotations")
        categories = self.by_id("categories", self.records(data, "categories"))
        if "id" in self.rules.annotations:
            self.by_id("annotations", annotations)
        sizes = self.check_images(images)
        self.check_categories(categories)
        used = self.check_annotations(annotations, images, categories, sizes)
        for category_id, (name, category) in categories.items():
            if category_id not in used:
                self.add(
                    "unused-category",
                    name,
                    "id",
                    f"category {category.get('name')!r} has no annotations",
                )
        seen_files: dict[str, str] = {}
        for name, image in images.values():
            file_name = image.get("file_name")
            if isinstance(file_name, str) and file_name in seen_files:
                message = f"{file_name!r} is also used by {seen_files[file_name]}"
                self.add("duplicate-file-name", name, "file_name", message)
            elif isinstance(file_name, str):
                seen_files[file_name] = name
        return self.findings

    def records(self, data: dict, section: str) -> list[tuple[str, dict]]:
        """The well-formed records of a section, each with its name for messages."""
        items = data.get(section)
        if items is None:
            self.add("missing-key", "top level", section, f"no '{section}' list")
            return []
        if not isinstance(items, list):
            kind = type(items).__name__
            self.add("bad-value", "top level", section, f"must be a list, got {kind}")
            return []
        required = getattr(self.rules, section)
        good = []
        for index, item in enumerate(items):
            name = record_name(section, index, item)
            if not isinstance(item, dict):
                self.add("bad-value", name, None, f"must be an object, got {type(item).__name__}")
                continue
            missing = [key for key in required if key not in item]
            for key in missing:
                self.add("missing-key", name, key, "required key is missing")
            if "id" in required and "id" in item and not is_int(item["id"]):
                self.add("bad-value", name, "id", f"must be an integer, got {item['id']!r}")
                continue
            if not missing:
                good.append((name, item))
        return good

    def by_id(self, section: str, records: list[tuple[str, dict]]) -> dict[int, tuple[str, dict]]:
        found: dict[int, tuple[str, dict]] = {}
        for name, item in records:
            key = int(item["id"])
            if key in found:
                self.add("duplicate-id", name, "id", f"id {key} is also used by {found[key][0]}")
            else:
                found[key] = (name, item)
        return found

    def check_images(self, images: dict[int, tuple[str, dict]]) -> dict[int, tuple[int, int]]:
        """Known sizes by image id; bad sizes and file names are findings."""
        sizes = {}
        for image_id, (name, image) in images.items():
            size = [image.get("width"), image.get("height")]
            for key, value in zip(("width", "height"), size, strict=True):
                if (value is not None or key in self.rules.images) and not (
                    is_int(value) and value > 0
                ):
                    self.add("bad-value", name, key, f"must be a positive integer, got {value!r}")
                    size = []
            file_name = image.get("file_name")
            if "file_name" in self.rules.images and not (isinstance(file_name, str) and file_name):
                message = f"must be a non-empty string, got {file_name!r}"
                self.add("bad-value", name, "file_name", message)
            if len(size) == 2 and None not in size:
                sizes[image_id] = (int(size[0]), int(size[1]))
        return sizes

    def check_categories(self, categories: dict[int, tuple[str, dict]]) -> None:
        names: dict[str, str] = {}
        for name, category in categories.values():
            label = category.get("name")
            if "name" in self.rules.categories and not (isinstance(label, str) and label):
                self.add("bad-value", name, "name", f"must be a non-empty string, got {label!r}")
            elif label in names:
                self.add("bad-value", name, "name", f"{label!r} is also used by {names[label]}")
            elif label is not None:
                names[label] = name

    def check_annotations(
        self,
        annotations: list[tuple[str, dict]],
        images: dict[int, Any],
        categories: dict[int, Any],
        sizes: dict[int, tuple[int, int]],
    ) -> set[int]:
        """Findings of each annotation; returns the category ids in use."""
        used: set[int] = set()
        for name, ann in annotations:
            image_id, category_id = ann["image_id"], ann["category_id"]
            if not is_int(image_id) or int(image_id) not in images:
                self.add("unknown-image", name, "image_id", f"no image with id {image_id!r}")
            if not is_int(category_id) or int(category_id) not in categories:
                message = f"no category with id {category_id!r}"
                self.add("unknown-category", name, "category_id", message)
            else:
                used.add(int(category_id))
            area = ann.get("area", 0)
            if not is_number(area) or area < 0:
                self.add("bad-value", name, "area", f"must be a finite number >= 0, got {area!r}")
            problem = box_problem(ann["bbox"], self.rules.positive_boxes)
            if problem is not None:
                self.add(problem[0], name, "bbox", problem[1])
            elif self.rules.boxes_inside and is_int(image_id) and int(image_id) in sizes:
                width, height = sizes[int(image_id)]
                if outside_image(ann["bbox"], width, height):
                    message = outside_message(ann["bbox"], width, height, image_id)
                    self.add("box-outside-image", name, "bbox", message)
        return used


def results(
    image_id: int,
    boxes_xyxy: Iterable[Sequence[float]],
    scores: Iterable[float],
    category_ids: Iterable[int],
    decimals: int | None = None,
) -> list[dict[str, Any]]:
    """One image's detections (xyxy pixel boxes) as COCO result records (bbox xywh)."""
    records = []
    for (x0, y0, x1, y1), score, category in zip(boxes_xyxy, scores, category_ids, strict=True):
        box = [float(x0), float(y0), float(x1) - float(x0), float(y1) - float(y0)]
        if decimals is not None:
            box = [round(v, decimals) for v in box]
        records.append(
            {
                "image_id": int(image_id),
                "category_id": int(category),
                "bbox": box,
                "score": float(score),
            }
        )
    return records


def output_results(
    image_id: int, output: dict[str, Any], category_ids: Sequence[int]
) -> list[dict]:
    """A torchvision detection output (boxes xyxy, scores, labels 1..K tensors) as COCO results."""
    labels = output["labels"].tolist()
    return results(
        image_id,
        output["boxes"].detach().float().cpu().tolist(),
        output["scores"].detach().float().cpu().tolist(),
        [category_ids[label - 1] for label in labels],
    )
