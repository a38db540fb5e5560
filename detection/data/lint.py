"""Check a COCO detection file (and its images) for the mistakes that silently break training."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detection.errors import InvalidInputError
from detection.images import MAX_PIXELS, image_size, read_image

ERROR = "error"
WARNING = "warning"

# kind -> severity; the order is the order of the summary table.
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

REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}


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


@dataclass
class LintResult:
    """All findings for one annotation file, plus what was checked."""

    file: str
    images_dir: str | None
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        """Findings that make the file unfit for training or evaluation."""
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        """Findings worth a look that do not break anything."""
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not self.errors

    def counts(self) -> dict[str, int]:
        """Number of findings per kind, in the order of ``KINDS``."""
        found = Counter(f.kind for f in self.findings)
        return {kind: found[kind] for kind in KINDS if found[kind]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the result."""
        data = asdict(self)
        data["counts"] = self.counts()
        data["ok"] = self.ok
        return data


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_id(value: Any) -> bool:
    # Strings are accepted as ids by pycocotools but ints are what everything else expects.
    return isinstance(value, int) and not isinstance(value, bool)


class _Linter:
    def __init__(self, result: LintResult) -> None:
        self.result = result

    def add(self, kind: str, record: str, field: str | None, message: str) -> None:
        self.result.findings.append(Finding(KINDS[kind], kind, record, field, message))

    def records(self, data: dict, section: str) -> list[tuple[str, dict]]:
        """The well-formed records of a section, each with its name for messages."""
        items = data.get(section)
        if items is None:
            self.add("missing-key", "top level", section, f"no '{section}' list")
            return []
        if not isinstance(items, list):
            self.add(
                "bad-value", "top level", section, f"must be a list, got {type(items).__name__}"
            )
            return []
        good = []
        for index, item in enumerate(items):
            name = f"{section}[{index}]"
            if not isinstance(item, dict):
                self.add("bad-value", name, None, f"must be an object, got {type(item).__name__}")
                continue
            if "id" in item:
                name += f" (id {item['id']!r})"
            missing = [key for key in REQUIRED[section] if key not in item]
            for key in missing:
                self.add("missing-key", name, key, "required key is missing")
            if "id" in item and not _is_id(item["id"]):
                self.add("bad-value", name, "id", f"must be an integer, got {item['id']!r}")
                continue
            if not missing:
                good.append((name, item))
        return good

    def unique_ids(
        self, section: str, records: list[tuple[str, dict]]
    ) -> dict[int, tuple[str, dict]]:
        by_id: dict[int, tuple[str, dict]] = {}
        for name, item in records:
            if item["id"] in by_id:
                first = by_id[item["id"]][0]
                self.add("duplicate-id", name, "id", f"id {item['id']} is also used by {first}")
            else:
                by_id[item["id"]] = (name, item)
        return by_id


def lint_coco(
    annotation_file: str | Path,
    images_dir: str | Path | None = None,
    *,
    decode_images: bool = False,
    max_pixels: int | None = MAX_PIXELS,
) -> LintResult:
    """Lint a COCO file; with ``images_dir``, also check every image exists, reads and has the stated size.

    Images are read from their header, or fully decoded with ``decode_images``; either way one
    with more than ``max_pixels`` pixels (None: no limit) is an unreadable-image error.
    """
    path = Path(annotation_file)
    result = LintResult(str(path), str(images_dir) if images_dir is not None else None)
    lint = _Linter(result)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidInputError(path, f"cannot read file ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        lint.add("malformed-json", f"line {exc.lineno} column {exc.colno}", None, exc.msg)
        return result
    if not isinstance(data, dict):
        lint.add(
            "malformed-json", "top level", None, f"must be an object, got {type(data).__name__}"
        )
        return result

    images = lint.unique_ids("images", lint.records(data, "images"))
    annotations = lint.unique_ids("annotations", lint.records(data, "annotations"))
    categories = lint.unique_ids("categories", lint.records(data, "categories"))
    result.num_images, result.num_annotations, result.num_categories = (
        len(images),
        len(annotations),
        len(categories),
    )

    sizes: dict[int, tuple[float, float]] = {}
    for image_id, (name, image) in images.items():
        width, height = image["width"], image["height"]
        bad = False
        for key, value in (("width", width), ("height", height)):
            if not _is_number(value) or value <= 0:
                lint.add("bad-value", name, key, f"must be a positive number, got {value!r}")
                bad = True
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            lint.add(
                "bad-value",
                name,
                "file_name",
                f"must be a non-empty string, got {image['file_name']!r}",
            )
            bad = True
        if not bad:
            sizes[image_id] = (float(width), float(height))

    used_categories: set[int] = set()
    for name, ann in annotations.values():
        if ann["image_id"] not in images:
            lint.add("unknown-image", name, "image_id", f"no image with id {ann['image_id']!r}")
        if ann["category_id"] not in categories:
            lint.add(
                "unknown-category",
                name,
                "category_id",
                f"no category with id {ann['category_id']!r}",
            )
        else:
            used_categories.add(ann["category_id"])
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)):
            lint.add(
                "bad-value", name, "bbox", f"must be 4 finite numbers [x, y, w, h], got {bbox!r}"
            )
            continue
        x, y, w, h = bbox
        if w <= 0 or h <= 0:
            lint.add(
                "degenerate-box", name, "bbox", f"width and height must be > 0, got w={w} h={h}"
            )
            continue
        if ann["image_id"] in sizes:
            width, height = sizes[ann["image_id"]]
            # A hair of tolerance: converters that round-trip through floats land at 640.0000001.
            eps = 1e-3
            if x < -eps or y < -eps or x + w > width + eps or y + h > height + eps:
                lint.add(
                    "box-outside-image",
                    name,
                    "bbox",
                    f"[{x:g}, {y:g}, {w:g}, {h:g}] exceeds image {ann['image_id']} of size {width:g}x{height:g}",
                )

    for category_id, (name, category) in categories.items():
        if category_id not in used_categories:
            lint.add(
                "unused-category",
                name,
                "id",
                f"category {category.get('name')!r} has no annotations",
            )

    seen_files: dict[str, str] = {}
    for image_id, (name, image) in images.items():
        if image_id not in sizes:
            continue
        file_name = image["file_name"]
        if file_name in seen_files:
            lint.add(
                "duplicate-file-name",
                name,
                "file_name",
                f"{file_name!r} is also used by {seen_files[file_name]}",
            )
            continue
        seen_files[file_name] = name
        if images_dir is not None:
            _check_image(
                lint, Path(images_dir) / file_name, name, sizes[image_id], decode_images, max_pixels
            )
    return result


def _check_image(
    lint: _Linter,
    path: Path,
    name: str,
    size: tuple[float, float],
    decode: bool,
    max_pixels: int | None,
) -> None:
    """Existence, readability (header, or a full decode), pixel limit and size of one image."""
    if not path.exists():
        lint.add("missing-image", name, "file_name", f"{path} does not exist")
        return
    try:
        if decode:
            pixels = read_image(path, max_pixels)
            actual = (int(pixels.shape[1]), int(pixels.shape[0]))
        else:
            actual = image_size(path, max_pixels)
    except InvalidInputError as exc:
        lint.add("unreadable-image", name, "file_name", f"{path}: {exc.problem}")
        return
    if (float(actual[0]), float(actual[1])) != size:
        lint.add(
            "size-mismatch",
            name,
            "width/height",
            f"json says {size[0]:g}x{size[1]:g}, {path.name} is {actual[0]}x{actual[1]}",
        )
