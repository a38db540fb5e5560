"""The per-box diff between the model's shown boxes and the reviewer's.

Kinds: ``confirmed`` (same class, IoU >= 0.5), ``moved`` (same class, lower IoU), ``relabelled``
(another class), ``removed`` (a false alarm the reviewer deleted), ``added`` (a defect the model
missed). Boxes are paired by the result id Label Studio keeps when a reviewer edits a shown box;
without ids (JSON-MIN, CVAT) by an optimal one-to-one assignment on IoU
(scipy's linear_sum_assignment over torchvision's box_iou), pairs needing IoU >= PAIR_IOU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

from detection.review.manifest import ModelBox, ReviewImage
from detection.review.reviewed import ReviewedBox, ReviewedTask

KINDS = ("confirmed", "moved", "relabelled", "removed", "added")
CONFIRM_IOU = 0.5
PAIR_IOU = 0.1  # without ids, boxes overlapping less than this are a removal plus an addition


@dataclass
class ImageDiff:
    """The diff of one reviewed image and the two verdicts."""

    image: str
    task_id: str
    decision: str  # the job's
    verdict: str  # the reviewer's: "fail" when any box remains
    reasons: tuple[str, ...]
    boxes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        """The reviewer's verdict is not the job's decision."""
        return self.verdict != self.decision

    def counts(self) -> Counter:
        """Boxes per diff kind."""
        return Counter(b["kind"] for b in self.boxes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "image": self.image, "task_id": self.task_id, "decision": self.decision,
            "verdict": self.verdict, "differs": self.differs, "reasons": list(self.reasons),
            "counts": {k: self.counts()[k] for k in KINDS}, "boxes": self.boxes,
        }  # fmt: skip


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two xyxy boxes (torchvision's box_iou)."""
    return float(
        box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[
            0, 0
        ]
    )


def pair_by_id(
    model: Sequence[ModelBox], reviewed: Sequence[ReviewedBox]
) -> list[tuple[int | None, int | None]]:
    """(model index, reviewed index) pairs by kept result id; unpaired sides get None."""
    position = {box.id: i for i, box in enumerate(model)}
    pairs: list[tuple[int | None, int | None]] = []
    used: set[int] = set()
    for j, box in enumerate(reviewed):
        i = position.get(box.id) if box.id is not None else None
        if i is not None and i not in used:
            used.add(i)
            pairs.append((i, j))
        else:
            pairs.append((None, j))
    pairs.extend((i, None) for i in range(len(model)) if i not in used)
    return pairs


def pair_by_iou(
    model: Sequence[ModelBox], reviewed: Sequence[ReviewedBox]
) -> list[tuple[int | None, int | None]]:
    """(model index, reviewed index) pairs by an optimal assignment on IoU (ties broken by
    class agreement); pairs below PAIR_IOU are split into a removal and an addition."""
    pairs: list[tuple[int | None, int | None]] = []
    if model and reviewed:
        ious = box_iou(
            torch.tensor([b.bbox for b in model], dtype=torch.float64),
            torch.tensor([b.bbox for b in reviewed], dtype=torch.float64),
        ).numpy()
        same = [[m.class_name == r.class_name for r in reviewed] for m in model]
        # A small bonus for the same class decides between equally overlapping candidates.
        rows, cols = linear_sum_assignment(ious + 1e-3 * (ious >= PAIR_IOU) * same, maximize=True)
        pairs = [
            (int(i), int(j)) for i, j in zip(rows, cols, strict=True) if ious[i, j] >= PAIR_IOU
        ]
    paired_model = {i for i, _ in pairs}
    paired_reviewed = {j for _, j in pairs}
    pairs += [(None, j) for j in range(len(reviewed)) if j not in paired_reviewed]
    pairs += [(i, None) for i in range(len(model)) if i not in paired_model]
    return pairs


def diff_image(item: ReviewImage, task: ReviewedTask) -> ImageDiff:
    """The per-box diff of one answered task against the boxes its image was shown with."""
    model, reviewed = list(item.boxes), task.boxes
    use_ids = any(box.id is not None for box in reviewed)
    pairs = pair_by_id(model, reviewed) if use_ids else pair_by_iou(model, reviewed)
    boxes = []
    for i, j in pairs:
        shown = model[i] if i is not None else None
        kept = reviewed[j] if j is not None else None
        entry: dict[str, Any] = {
            "model_id": shown.id if shown else None,
            "model_class": shown.class_name if shown else None,
            "model_bbox": list(shown.bbox) if shown else None,
            "score": shown.score if shown else None,
            "class_name": kept.class_name if kept else None,
            "bbox": [round(v, 2) for v in kept.bbox] if kept else None,
        }
        if shown is None:
            entry["kind"], entry["iou"] = "added", None
        elif kept is None:
            entry["kind"], entry["iou"] = "removed", None
        else:
            overlap = iou(shown.bbox, kept.bbox)
            entry["iou"] = round(overlap, 4)
            if shown.class_name != kept.class_name:
                entry["kind"] = "relabelled"
            else:
                entry["kind"] = "confirmed" if overlap >= CONFIRM_IOU else "moved"
        boxes.append(entry)
    verdict = "fail" if reviewed else "pass"
    return ImageDiff(item.image, task.task_id, item.decision, verdict, item.reasons, boxes)
