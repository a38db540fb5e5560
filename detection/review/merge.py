"""The reviewed images as COCO: a corrected json of their own, or merged into a training json.

Merging maps categories by name, gives the new images and annotations fresh ids after the
training json's largest, and refuses an image the training json already holds (reviewed
twice) unless `replace` says to keep the latest review and drop the older labels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from detection.core.errors import InvalidInputError
from detection.review.manifest import Manifest
from detection.review.reviewed import ANNOTATED, ReviewedTask


def file_name(image: str, images_root: str) -> str:
    """The COCO file_name of an image: its path below `images_root`.

    Raises:
        ValueError: the image does not lie below `images_root`.
    """
    relative = os.path.relpath(os.path.abspath(image), os.path.abspath(images_root))
    if relative.startswith(".."):
        raise ValueError(f"{image} does not lie below the images root {images_root}")
    return relative.replace(os.sep, "/")


def corrected_coco(
    tasks: Sequence[ReviewedTask], manifest: Manifest, images_root: str
) -> dict[str, Any]:
    """The answered tasks as a COCO dataset with the model's categories (unanswered left out).

    Boxes with no area after clipping to the image are left out (lint would refuse them).
    """
    by_image = manifest.by_image()
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for task in tasks:
        if task.status != ANNOTATED:
            continue
        item = by_image[task.image]
        image_id = len(images) + 1
        images.append(
            {"id": image_id, "file_name": file_name(item.image, images_root),
             "width": item.width, "height": item.height}
        )  # fmt: skip
        for box in task.boxes:
            x1, y1, x2, y2 = box.bbox
            w, h = round(x2 - x1, 2), round(y2 - y1, 2)
            if w <= 0 or h <= 0:
                continue
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id,
                 "category_id": manifest.classes[box.class_name],
                 "bbox": [round(x1, 2), round(y1, 2), w, h], "area": round(w * h, 2),
                 "iscrowd": 0}
            )  # fmt: skip
    categories = [{"id": cid, "name": name} for name, cid in manifest.classes.items()]
    return {"images": images, "annotations": annotations, "categories": categories}


def merge_coco(
    base: Mapping[str, Any],
    corrected: Mapping[str, Any],
    *,
    base_name: str = "training json",
    replace: bool = False,
    extend_classes: bool = False,
) -> tuple[dict[str, Any], dict[str, int]]:
    """`corrected` merged into `base`; returns the merged dataset and counts of what changed.

    Raises:
        InvalidInputError: a reviewed class the base lacks (without `extend_classes`), or an
            image the base already holds (without `replace`), naming the record.
    """
    categories = [dict(c) for c in base["categories"]]
    ids = {c["name"]: c["id"] for c in categories}
    new_classes = 0
    for category in corrected["categories"]:
        if category["name"] in ids:
            continue
        used = any(a["category_id"] == category["id"] for a in corrected["annotations"])
        if not used:
            continue  # a class the reviewer never drew needs no category
        if not extend_classes:
            raise InvalidInputError(
                base_name, f"has no category {category['name']!r} (the model's class list "
                "differs; pass --extend-classes to add it)", field="categories",
            )  # fmt: skip
        ids[category["name"]] = max(ids.values(), default=0) + 1
        categories.append({"id": ids[category["name"]], "name": category["name"]})
        new_classes += 1
    name_of = {c["id"]: c["name"] for c in corrected["categories"]}
    reviewed = {image["file_name"] for image in corrected["images"]}
    images = [dict(i) for i in base["images"]]
    annotations = [dict(a) for a in base["annotations"]]
    twice = [i for i in images if i["file_name"] in reviewed]
    if twice and not replace:
        raise InvalidInputError(
            base_name, f"already holds {twice[0]['file_name']!r} (reviewed twice?); pass "
            "--replace-reviewed to keep the latest review", record=f"image id {twice[0]['id']}",
            field="file_name",
        )  # fmt: skip
    dropped = {i["id"] for i in twice}
    images = [i for i in images if i["id"] not in dropped]
    removed_annotations = sum(a["image_id"] in dropped for a in annotations)
    annotations = [a for a in annotations if a["image_id"] not in dropped]
    next_image = max((i["id"] for i in base["images"]), default=0) + 1
    next_annotation = max((a["id"] for a in base["annotations"]), default=0) + 1
    new_id: dict[int, int] = {}
    for image in corrected["images"]:
        new_id[image["id"]] = next_image
        images.append({**image, "id": next_image})
        next_image += 1
    for annotation in corrected["annotations"]:
        category = ids[name_of[annotation["category_id"]]]
        annotations.append(
            {**annotation, "id": next_annotation, "image_id": new_id[annotation["image_id"]],
             "category_id": category}
        )  # fmt: skip
        next_annotation += 1
    merged = {k: v for k, v in base.items() if k not in ("images", "annotations", "categories")}
    merged.update(images=images, annotations=annotations, categories=categories)
    counts = {
        "images_added": len(corrected["images"]),
        "annotations_added": len(corrected["annotations"]),
        "images_replaced": len(dropped),
        "annotations_replaced": removed_annotations,
        "classes_added": new_classes,
    }
    return merged, counts
