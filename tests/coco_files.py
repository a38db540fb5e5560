"""Tiny COCO datasets written on the fly for tests: images with cv2, annotations as json.

    ann_file, image_root = write_coco(tmp_path, [
        {"boxes": [(4, 4, 10, 8, 3)]},                      # one box of category 3
        {"kind": "gray", "boxes": []},                       # a negative, grayscale
        {"boxes": [(0, 0, 20, 20, 7)], "crowd": [(30, 5, 10, 10, 7)]},
    ])

Boxes are COCO (x, y, width, height, category_id). Category ids are 3 and 7 by default,
not 1..K, so tests exercise the label mapping.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

CATEGORIES: list[dict[str, Any]] = [{"id": 7, "name": "dent"}, {"id": 3, "name": "scratch"}]
IMAGE_KINDS = ("rgb", "gray", "gray16", "rgba")


def write_image(
    path: str | Path, width: int = 64, height: int = 48, *, kind: str = "rgb", seed: int = 0
) -> Path:
    """Write a noise image: kind rgb (.jpg/.png), gray, gray16 (16-bit PNG) or rgba (PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if kind == "rgb":
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    elif kind == "gray":
        pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
    elif kind == "gray16":
        pixels = rng.integers(0, 65536, (height, width), dtype=np.uint16)
    elif kind == "rgba":
        pixels = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    else:
        raise ValueError(f"kind must be one of {IMAGE_KINDS}, not {kind!r}")
    if not cv2.imwrite(str(path), pixels):
        raise OSError(f"cv2 could not write {path}")
    return path


def truncate_file(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes, as an interrupted copy does."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_coco(
    root: str | Path,
    images: Sequence[dict[str, Any]],
    *,
    categories: Sequence[dict[str, Any]] = CATEGORIES,
    name: str = "annotations.json",
) -> tuple[Path, Path]:
    """Write images under root/images and a COCO json root/name; return (json path, image root).

    Each entry of ``images`` may set: id (default 1, 2, ...), file_name (default NNN.png or .jpg
    for rgb), width (64), height (48), kind ("rgb"), boxes and crowd (lists of
    (x, y, w, h, category_id)), seed (pixel noise, default the index), write (False leaves
    the file out, for missing-file tests).
    """
    root = Path(root)
    image_root = root / "images"
    coco: dict[str, Any] = {"images": [], "annotations": [], "categories": list(categories)}
    annotation_id = 1
    for index, spec in enumerate(images):
        image_id = spec.get("id", index + 1)
        kind = spec.get("kind", "rgb")
        width, height = spec.get("width", 64), spec.get("height", 48)
        file_name = spec.get("file_name", f"{image_id:03d}.{'jpg' if kind == 'rgb' else 'png'}")
        if spec.get("write", True):
            seed = spec.get("seed", index)
            write_image(image_root / file_name, width, height, kind=kind, seed=seed)
        coco["images"].append(
            {"id": image_id, "file_name": file_name, "width": width, "height": height}
        )
        for crowd, key in ((0, "boxes"), (1, "crowd")):
            for x, y, w, h, category_id in spec.get(key, []):
                coco["annotations"].append(
                    {
                        "id": annotation_id,
                        "image_id": image_id,
                        "category_id": category_id,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": crowd,
                    }
                )
                annotation_id += 1
    annotation_file = root / name
    annotation_file.write_text(json.dumps(coco))
    return annotation_file, image_root


def random_images(
    num_images: int,
    *,
    sizes: Sequence[tuple[int, int]] = ((64, 48),),
    max_boxes: int = 4,
    categories: Sequence[dict[str, Any]] = CATEGORIES,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Image specs for write_coco with random boxes; sizes (width, height) are used in turn."""
    rng = np.random.default_rng(seed)
    ids = [c["id"] for c in categories]
    specs = []
    for i in range(num_images):
        width, height = sizes[i % len(sizes)]
        boxes = []
        for _ in range(int(rng.integers(0, max_boxes + 1))):
            w, h = int(rng.integers(2, width // 2)), int(rng.integers(2, height // 2))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            boxes.append((x, y, w, h, int(rng.choice(ids))))
        specs.append({"width": width, "height": height, "boxes": boxes})
    return specs


def edit_json(path: str | Path, **changes: Any) -> Path:
    """Rewrite top-level keys of a json file (a value of None deletes the key)."""
    path = Path(path)
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))
    return path
