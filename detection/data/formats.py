"""Convert Pascal VOC XML and YOLO txt annotations to and from COCO json.

Box conventions at each file boundary:

- COCO: ``[x, y, w, h]`` in continuous pixel coordinates; pixel ``i`` spans ``[i, i + 1)``.
- Pascal VOC: ``xmin ymin xmax ymax`` are 1-based, inclusive pixel indices, so a box covering
  0-based pixels ``0..9`` is written ``xmin=1, xmax=10``. COCO ``x = xmin - 1``, ``w = xmax - xmin + 1``
  (the same reading as Detectron2's VOC loader).
- YOLO: ``class cx cy w h`` with the centre and size divided by the image width / height;
  ``class`` is the 0-based line of ``classes.txt``.

Every box follows data lint's rules (see `detection.data.box_policy`): a bad one is a one-line
error, one reaching outside its image is clipped and counted (``boxes="clip"``) or refused
(``boxes="reject"``). Files without a partner (a label file without an image, an image without a
label file) and VOC ``<size>`` values other than the image's (whose own size is used) are counted
in a ConversionWarning. Only regular files are read: a FIFO or device is a one-line error.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from detection.core.coco_format import (
    CONVERTER_RULES,
    raise_first,
    read_coco,
    record_name,
    validate,
)
from detection.core.errors import InvalidInputError, OutputError
from detection.core.files import check_regular_file
from detection.core.images import IMAGE_EXTENSIONS, image_size
from detection.core.run_folder import output_folder, write_atomic
from detection.data.box_policy import BoxPolicy, warn_unmatched

Coco = dict[str, Any]


def read_text(path: str | Path) -> str:
    """A regular UTF-8 text file (a BOM allowed); anything else is a one-line InvalidInputError."""
    path = check_regular_file(path)  # a FIFO would block the read forever
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(path, f"cannot read the file ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem = f"is not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as UTF-8"
        raise InvalidInputError(path, problem, record=f"line {line}") from None


def read_classes(path: str | Path) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored)."""
    path = Path(path)
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if not names:
        raise InvalidInputError(path, "class list is empty")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInputError(path, f"duplicate class names {duplicates}")
    return names


def load_coco(path: str | Path) -> Coco:
    """Read a COCO json to convert; its first error (see `coco_format`) is raised."""
    return read_coco(path, CONVERTER_RULES)


def save_coco(coco: Coco, path: str | Path) -> Path:
    """Write COCO json atomically with sorted keys (diffable); OutputError when `path` is a
    folder, a parent is a file, or the disk refuses."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(path, "is a folder; name the json file to write")
    output_folder(path.parent)
    write_atomic(path, json.dumps(coco, indent=1, sort_keys=True) + "\n")
    return path


def _categories(classes: Sequence[str]) -> list[dict[str, Any]]:
    return [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(classes)]


def coco_dataset(
    images: list[dict], annotations: list[dict], classes: Sequence[str], description: str
) -> Coco:
    return {
        "info": {"description": description},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": _categories(classes),
    }


def coco_annotation(
    ann_id: int, image_id: int, category_id: int, x: float, y: float, w: float, h: float
) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(x), float(y), float(w), float(h)],
        "area": float(w) * float(h),
        "iscrowd": 0,
    }


def list_images(images_dir: str | Path) -> list[Path]:
    """Files with an image name under a folder (recursive), sorted by relative path; FIFOs too,
    so that reading them refuses them in one line instead of leaving them out unseen."""
    root = Path(images_dir)
    if not root.is_dir():
        raise InvalidInputError(root, "images folder not found")
    return sorted(
        p for p in root.rglob("*") if not p.is_dir() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def parse_number(text: str | None, file: Path, record: str, field: str) -> float:
    try:
        return float(text) if text is not None else float("nan")
    except ValueError:
        raise InvalidInputError(
            file, f"not a number: {text!r}", record=record, field=field
        ) from None


def _voc_documents(annotations_dir: Path) -> list[tuple[Path, ET.Element]]:
    """Every XML file under `annotations_dir`, parsed."""
    files = sorted(annotations_dir.rglob("*.xml")) if annotations_dir.is_dir() else []
    if not files:
        raise InvalidInputError(annotations_dir, "no .xml files found")
    documents = []
    for path in files:
        check_regular_file(path)  # ElementTree would block on a FIFO
        try:
            documents.append((path, ET.parse(path).getroot()))
        except ET.ParseError as exc:
            raise InvalidInputError(path, f"malformed XML: {exc}") from None
    return documents


def voc_to_coco(
    images_dir: str | Path,
    annotations_dir: str | Path,
    classes: Sequence[str] | None = None,
    boxes: str = "clip",
) -> Coco:
    """One COCO dataset from a folder of Pascal VOC XML files (one image per XML)."""
    images_dir, annotations_dir = Path(images_dir), Path(annotations_dir)
    documents = _voc_documents(annotations_dir)
    if classes is None:  # the names the files use, sorted (a nameless object is reported below)
        used = {
            (o.findtext("name") or "").strip() for _, r in documents for o in r.findall("object")
        }
        classes = sorted(used - {""})
    by_stem = {
        p.relative_to(images_dir).with_suffix("").as_posix(): p for p in list_images(images_dir)
    }
    category_id = {name: i + 1 for i, name in enumerate(classes)}
    policy = BoxPolicy(boxes)
    images: list[dict] = []
    annotations: list[dict] = []
    disagreeing: list[str] = []
    for xml_path, root in documents:
        stem = xml_path.relative_to(annotations_dir).with_suffix("").as_posix()
        filename = (root.findtext("filename") or "").strip()
        candidates = [images_dir / Path(stem).parent / filename] if filename else []
        candidates += [images_dir / filename] if filename else []
        image_path = next((p for p in candidates if p.exists()), by_stem.get(stem))
        if image_path is None:
            raise InvalidInputError(
                xml_path, f"no image for this file in {images_dir}", field="filename"
            )
        width, height = _voc_size(root, xml_path, image_path, disagreeing)
        image_id = len(images) + 1
        images.append(
            {
                "id": image_id,
                "file_name": image_path.relative_to(images_dir).as_posix(),
                "width": width,
                "height": height,
            }
        )
        for i, obj in enumerate(root.findall("object")):
            record = f"object[{i}]"
            name = (obj.findtext("name") or "").strip()
            if name not in category_id:
                raise InvalidInputError(
                    xml_path,
                    f"class {name!r} is not in the class list",
                    record=record,
                    field="name",
                )
            box = obj.find("bndbox")
            if box is None:
                raise InvalidInputError(xml_path, "missing", record=record, field="bndbox")
            xmin, ymin, xmax, ymax = (
                parse_number(box.findtext(k), xml_path, record, f"bndbox/{k}")
                for k in ("xmin", "ymin", "xmax", "ymax")
            )
            xywh = [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]
            xywh = policy.check(xywh, width, height, xml_path, record, "bndbox")
            ann = coco_annotation(len(annotations) + 1, image_id, category_id[name], *xywh)
            difficult = obj.findtext("difficult")
            if difficult is not None and difficult.strip() not in ("", "0"):
                ann["difficult"] = 1
            annotations.append(ann)
    policy.warn(annotations_dir)
    warn_unmatched("XML files declare a <size> other than their image's", disagreeing,
                   "the image's own size is used")  # fmt: skip
    used = {image["file_name"] for image in images}
    unlabeled = [p for p in by_stem.values() if p.relative_to(images_dir).as_posix() not in used]
    warn_unmatched("images have no XML file", unlabeled, "not converted")
    return coco_dataset(
        images, annotations, classes, f"converted from Pascal VOC {annotations_dir}"
    )


def _voc_size(
    root: ET.Element, xml_path: Path, image_path: Path, disagreeing: list[str]
) -> tuple[int, int]:
    """The image's (width, height) from its header; a <size> that says otherwise is noted in
    ``disagreeing``. The image is the truth: COCO sizes must match the pixels for training."""
    declared = tuple(
        parse_number(root.findtext(f"size/{key}") or "0", xml_path, "size", key)
        for key in ("width", "height")
    )
    actual = image_size(image_path)
    # Some tools write 0 or leave <size> out: nothing to disagree with then.
    if all(value > 0 for value in declared) and declared != actual:
        disagreeing.append(
            f"{xml_path} says {declared[0]:g}x{declared[1]:g}, {image_path.name} is "
            f"{actual[0]}x{actual[1]}"
        )
    return actual


def _fmt(value: float) -> str:
    """Integers without a decimal point (VOC readers often call int()), others exactly."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _sorted_categories(coco: Coco) -> list[dict]:
    return sorted(coco["categories"], key=lambda c: c["id"])


def coco_to_voc(coco: Coco, out_dir: str | Path, boxes: str = "clip") -> list[Path]:
    """Write one Pascal VOC XML per image (negatives included); return the written paths.
    Raises OutputError when `out_dir` is a file or the disk refuses a write."""
    out_dir = output_folder(Path(out_dir))
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image = _boxes_by_image(coco, BoxPolicy(boxes))
    written = []
    for im in coco["images"]:
        root = ET.Element("annotation")
        file_name = Path(im["file_name"])
        ET.SubElement(root, "folder").text = file_name.parent.as_posix()
        ET.SubElement(root, "filename").text = file_name.name
        size = ET.SubElement(root, "size")
        ET.SubElement(size, "width").text = str(im["width"])
        ET.SubElement(size, "height").text = str(im["height"])
        ET.SubElement(size, "depth").text = "3"
        for ann, (x, y, w, h) in by_image[im["id"]]:
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = names[ann["category_id"]]
            ET.SubElement(obj, "difficult").text = str(int(ann.get("difficult", 0)))
            box = ET.SubElement(obj, "bndbox")
            for key, value in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
                ET.SubElement(box, key).text = _fmt(value)
        ET.indent(root)
        path = out_dir / file_name.with_suffix(".xml")
        write_atomic(output_folder(path.parent) / path.name, ET.tostring(root, encoding="unicode"))
        written.append(path)
    return written


def yolo_to_coco(
    images_dir: str | Path, labels_dir: str | Path, classes: Sequence[str], boxes: str = "clip"
) -> Coco:
    """One COCO dataset from images and YOLO label files; an image without a label file is a negative."""
    images_dir, labels_dir = Path(images_dir), Path(labels_dir)
    if not labels_dir.is_dir():
        raise InvalidInputError(labels_dir, "labels folder not found")
    image_paths = list_images(images_dir)
    if not image_paths:
        raise InvalidInputError(images_dir, "no images found")
    policy = BoxPolicy(boxes)
    images: list[dict] = []
    annotations: list[dict] = []
    unlabeled = []
    for image_path in image_paths:
        relative = image_path.relative_to(images_dir)
        width, height = image_size(image_path)
        image_id = len(images) + 1
        images.append(
            {"id": image_id, "file_name": relative.as_posix(), "width": width, "height": height}
        )
        label_path = labels_dir / relative.with_suffix(".txt")
        if not os.path.lexists(label_path):  # anything there is read: a FIFO is refused
            unlabeled.append(image_path)
            continue
        for line_no, line in enumerate(read_text(label_path).splitlines(), start=1):
            fields = line.split()
            if not fields:
                continue
            record = f"line {line_no}"
            if len(fields) != 5:
                raise InvalidInputError(
                    label_path,
                    f"expected 5 fields 'class cx cy w h', got {len(fields)}",
                    record=record,
                )
            try:
                cls = int(fields[0])
            except ValueError:
                raise InvalidInputError(
                    label_path, f"not an integer: {fields[0]!r}", record=record, field="class"
                ) from None
            if not 0 <= cls < len(classes):
                raise InvalidInputError(
                    label_path,
                    f"class index {cls} outside 0..{len(classes) - 1}",
                    record=record,
                    field="class",
                )
            cx, cy, w, h = (
                _unit(parse_number(v, label_path, record, k), label_path, record, k)
                for v, k in zip(fields[1:], ("cx", "cy", "w", "h"), strict=True)
            )
            bw, bh = w * width, h * height
            xywh = [cx * width - bw / 2, cy * height - bh / 2, bw, bh]
            xywh = policy.check(xywh, width, height, label_path, record, "cx cy w h")
            annotations.append(coco_annotation(len(annotations) + 1, image_id, cls + 1, *xywh))
    policy.warn(labels_dir)
    matched = {(labels_dir / p.relative_to(images_dir)).with_suffix(".txt") for p in image_paths}
    orphans = sorted(p for p in labels_dir.rglob("*.txt") if p not in matched)
    orphans = [p for p in orphans if p.name != "classes.txt"]
    warn_unmatched("label files have no image", orphans, "not converted")
    warn_unmatched("images have no label file", unlabeled, "kept as defect-free")
    return coco_dataset(images, annotations, classes, f"converted from YOLO {labels_dir}")


def _unit(value: float, file: Path, record: str, field: str) -> float:
    """A YOLO value: a fraction of the image width or height, in 0..1."""
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise InvalidInputError(file, f"must be in 0..1, got {value!r}", record=record, field=field)
    return value


def _boxes_by_image(coco: Coco, policy: BoxPolicy) -> dict[Any, list[tuple[dict, list[float]]]]:
    """Each image's (annotation, checked box) pairs, for writing; raises the first bad record."""
    raise_first(validate(coco, CONVERTER_RULES), "COCO data")
    sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
    by_image: dict[Any, list[tuple[dict, list[float]]]] = {im["id"]: [] for im in coco["images"]}
    for i, ann in enumerate(coco["annotations"]):
        box = policy.check(
            ann["bbox"],
            *sizes[ann["image_id"]],
            "COCO data",
            record_name("annotations", i, ann),
            "bbox",
        )
        by_image[ann["image_id"]].append((ann, box))
    policy.warn("COCO data")
    return by_image


def coco_to_yolo(coco: Coco, out_dir: str | Path, boxes: str = "clip") -> list[Path]:
    """Write one YOLO label file per image (empty for negatives) and classes.txt; return label
    paths. Raises OutputError when `out_dir` is a file or the disk refuses a write."""
    out_dir = Path(out_dir)
    categories = _sorted_categories(coco)
    # YOLO indices are positions in the id-sorted category list, so gaps in ids disappear.
    index = {c["id"]: i for i, c in enumerate(categories)}
    by_image = _boxes_by_image(coco, BoxPolicy(boxes))
    output_folder(out_dir)
    write_atomic(out_dir / "classes.txt", "".join(f"{c['name']}\n" for c in categories))
    written = []
    for im in coco["images"]:
        width, height = float(im["width"]), float(im["height"])
        lines = []
        for ann, (x, y, w, h) in by_image[im["id"]]:
            lines.append(
                f"{index[ann['category_id']]} {(x + w / 2) / width:.8f} {(y + h / 2) / height:.8f} "
                f"{w / width:.8f} {h / height:.8f}\n"
            )
        path = out_dir / Path(im["file_name"]).with_suffix(".txt")
        write_atomic(output_folder(path.parent) / path.name, "".join(lines))
        written.append(path)
    return written
