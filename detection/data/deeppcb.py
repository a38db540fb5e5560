"""The DeepPCB printed-circuit-board defect dataset (Tang et al., arXiv:1902.06197) as COCO.

Its label files hold ``x1 y1 x2 y2 type`` corners in continuous pixel coordinates of 640x640 crops.
"""

from __future__ import annotations

from pathlib import Path

from detection.core.errors import ImageReadError, InvalidInputError
from detection.core.files import regular_file_problem
from detection.data.box_policy import BoxPolicy
from detection.data.formats import (
    Coco,
    coco_annotation,
    coco_dataset,
    parse_number,
    read_text,
    save_coco,
)

DEEPPCB_CLASSES = ("open", "short", "mousebite", "spur", "copper", "pin-hole")
DEEPPCB_SIZE = 640


def deeppcb_to_coco(root: str | Path, split: str) -> Coco:
    """The DeepPCB ``trainval`` or ``test`` split as COCO, file names relative to ``root``."""
    root = Path(root)
    list_file = root / f"{split}.txt"
    if not list_file.exists():  # anything else there is refused by read_text, a FIFO too
        raise InvalidInputError(list_file, "DeepPCB split list not found")
    policy = BoxPolicy("clip")
    images: list[dict] = []
    annotations: list[dict] = []
    for line_no, line in enumerate(read_text(list_file).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2:
            raise InvalidInputError(
                list_file, "expected 'image.jpg labels.txt'", record=f"line {line_no}"
            )
        # The listed image name drops the '_test' suffix that the file on disk has.
        image_rel = Path(fields[0])
        image_rel = image_rel.with_name(f"{image_rel.stem}_test{image_rel.suffix}")
        problem = regular_file_problem(root / image_rel)
        if problem is not None:
            problem = "image file not found" if problem == "file not found" else problem
            raise ImageReadError(
                root / image_rel, problem, record=f"{list_file.name} line {line_no}"
            )
        image_id = len(images) + 1
        # All DeepPCB crops are 640x640 (README); reading 1500 headers would only confirm it.
        images.append(
            {
                "id": image_id,
                "file_name": image_rel.as_posix(),
                "width": DEEPPCB_SIZE,
                "height": DEEPPCB_SIZE,
            }
        )
        label_path = root / fields[1]
        try:
            label_lines = read_text(label_path).splitlines()
        except OSError:
            raise InvalidInputError(
                label_path, "label file not found", record=f"{list_file.name} line {line_no}"
            ) from None
        for box_no, box_line in enumerate(label_lines, start=1):
            values = box_line.replace(",", " ").split()
            if not values:
                continue
            record = f"line {box_no}"
            if len(values) != 5:
                raise InvalidInputError(
                    label_path, f"expected 'x1 y1 x2 y2 type', got {box_line!r}", record=record
                )
            x1, y1, x2, y2 = (
                parse_number(v, label_path, record, k)
                for v, k in zip(values[:4], ("x1", "y1", "x2", "y2"), strict=True)
            )
            kind = int(parse_number(values[4], label_path, record, "type"))
            if not 1 <= kind <= len(DEEPPCB_CLASSES):
                raise InvalidInputError(
                    label_path, f"unknown defect type {kind}", record=record, field="type"
                )
            xywh = [x1, y1, x2 - x1, y2 - y1]
            xywh = policy.check(xywh, DEEPPCB_SIZE, DEEPPCB_SIZE, label_path, record, "x1 y1 x2 y2")
            annotations.append(coco_annotation(len(annotations) + 1, image_id, kind, *xywh))
    policy.warn(root)
    return coco_dataset(
        images, annotations, DEEPPCB_CLASSES, f"DeepPCB {split} split, converted from {root.name}"
    )


def convert_deeppcb(root: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Write ``trainval.json`` and ``test.json`` for DeepPCB's official splits; return split -> path."""
    out_dir = Path(out_dir)
    return {
        split: save_coco(deeppcb_to_coco(root, split), out_dir / f"{split}.json")
        for split in ("trainval", "test")
    }
