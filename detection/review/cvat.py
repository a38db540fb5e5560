"""CVAT's "CVAT for images 1.1" XML: the shown boxes as pre-annotations (`source="auto"`), and
a task's export read back.

Boxes are pixel `xtl ytl xbr ybr`. CVAT keeps no box ids, so an import matches the reviewer's
boxes to the model's by IoU (see diff.py). CVAT exports every image of a task, answered or not:
each image of the XML counts as reviewed.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

from detection.core.errors import InvalidInputError
from detection.core.files import check_regular_file
from detection.core.run_folder import write_atomic
from detection.review.manifest import Manifest
from detection.review.reviewed import ANNOTATED, ReviewedBox, ReviewedTask

CVAT_FILE = "cvat_annotations.xml"
# Elements of other region types, refused on import: only boxes are defects here.
OTHER_SHAPES = ("polygon", "polyline", "points", "mask", "cuboid", "ellipse", "skeleton", "tag")


def cvat_name(image: str, root: str | None) -> str:
    """The image's name in CVAT: its path below `root` (default: its file name)."""
    if root is None:
        return os.path.basename(image)
    return os.path.relpath(os.path.abspath(image), os.path.abspath(root)).replace(os.sep, "/")


def write_cvat(folder: Path, manifest: Manifest, root: str | None = None) -> Path:
    """Write `cvat_annotations.xml` (CVAT for images 1.1) atomically; returns its path.

    Raises:
        ValueError: two exported images would have the same name in CVAT.
    """
    names = [cvat_name(item.image, root) for item in manifest.images]
    if len(set(names)) != len(names):
        raise ValueError("two exported images have the same file name; pass the images' root "
                         "folder so CVAT names them by their path below it")  # fmt: skip
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>"]
    lines += ["  <meta>", "    <task>", f"      <size>{len(names)}</size>", "      <labels>"]
    for name in manifest.classes:
        lines += [f"        <label><name>{_text(name)}</name><type>rectangle</type>"
                  "<attributes/></label>"]  # fmt: skip
    lines += ["      </labels>", "    </task>", "  </meta>"]
    for index, (item, name) in enumerate(zip(manifest.images, names, strict=True)):
        lines.append(
            f"  <image id={quoteattr(str(index))} name={quoteattr(name)} "
            f'width="{item.width}" height="{item.height}">'
        )
        for box in item.boxes:
            x1, y1, x2, y2 = box.bbox
            lines.append(
                f'    <box label={quoteattr(box.class_name)} source="auto" occluded="0" '
                f'xtl="{x1:.2f}" ytl="{y1:.2f}" xbr="{x2:.2f}" ybr="{y2:.2f}" z_order="0"></box>'
            )
        lines.append("  </image>")
    lines.append("</annotations>")
    path = folder / CVAT_FILE
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def read_cvat(path: str | Path, manifest: Manifest, root: str | None = None) -> list[ReviewedTask]:
    """The images of a CVAT for images 1.1 export, mapped to the exported images by name.

    Raises:
        InvalidInputError: naming the image id and field: a truncated or malformed file,
            duplicate image ids, an image not in the export, a shape that is not a box, a
            rotated box, a label not in the class list, a coordinate that is not a number.
    """
    check_regular_file(path)
    try:
        tree = ET.parse(path)
    except ET.ParseError as error:
        line, column = error.position
        raise InvalidInputError(
            path, f"truncated or malformed XML at line {line} column {column}"
        ) from None
    by_name = {cvat_name(item.image, root): item for item in manifest.images}
    tasks: list[ReviewedTask] = []
    seen: set[str] = set()
    for element in tree.getroot().iter("image"):
        image_id = element.get("id")
        record = f"image {image_id}"
        if image_id is None:
            raise InvalidInputError(path, "missing", record="image", field="id")
        if image_id in seen:
            raise InvalidInputError(path, "duplicate image id", record=record, field="id")
        seen.add(image_id)
        item = by_name.get(element.get("name"))
        if item is None:
            raise InvalidInputError(
                path, f"{element.get('name')!r} is not in the review export",
                record=record, field="name",
            )  # fmt: skip
        for child in element:
            if child.tag in OTHER_SHAPES:
                raise InvalidInputError(
                    path, f"a {child.tag} is not a box; only boxes can be imported",
                    record=record, field=child.tag,
                )  # fmt: skip
        boxes = [
            _box(path, record, i, box, manifest, item.width, item.height)
            for i, box in enumerate(element.iter("box"))
        ]
        tasks.append(ReviewedTask(image_id, item.image, ANNOTATED, boxes))
    return tasks


def _box(
    path: str | Path,
    record: str,
    index: int,
    box: ET.Element,
    manifest: Manifest,
    width: int,
    height: int,
) -> ReviewedBox:
    where = f"box[{index}]"
    label = box.get("label")
    if label not in manifest.classes:
        raise InvalidInputError(
            path, f"label {label!r} is not in the class list {list(manifest.classes)}",
            record=record, field=f"{where}.label",
        )  # fmt: skip
    values: list[float] = []
    for key in ("rotation", "xtl", "ytl", "xbr", "ybr"):
        try:
            values.append(float(box.get(key, "0" if key == "rotation" else "")))
        except ValueError:
            raise InvalidInputError(
                path, f"must be a number, got {box.get(key)!r}", record=record,
                field=f"{where}.{key}",
            ) from None  # fmt: skip
    rotation, x1, y1, x2, y2 = values
    if rotation != 0:
        raise InvalidInputError(
            path, f"rotated box ({rotation:g} degrees); only upright boxes",
            record=record, field=f"{where}.rotation",
        )  # fmt: skip
    clipped = (
        min(max(x1, 0.0), width), min(max(y1, 0.0), height),
        min(max(x2, 0.0), width), min(max(y2, 0.0), height),
    )  # fmt: skip
    return ReviewedBox(label, clipped)


def label_names(path: str | Path) -> Sequence[str]:
    """The label names a CVAT XML declares in its meta."""
    root = ET.parse(path).getroot()
    return [name.text or "" for name in root.iterfind("./meta/task/labels/label/name")]
