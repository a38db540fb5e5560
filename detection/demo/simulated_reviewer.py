"""A reviewer simulated from the ground truth, for the review loop on generated data.

It answers Label Studio tasks (as `detection review export` writes them) the way a careful person
would, in a full-JSON export (the format tests/test_review_label_studio.py reads from a real
server): for each ground-truth box, in order, it keeps the shown box that overlaps it most when
that IoU is >= KEEP_IOU (not already kept for another one), with the ground truth's class (a
relabel when the model said another); it deletes every shown box left over (false alarms) and
draws every ground-truth box no shown box matched (missed defects). Kept boxes keep the model's
coordinates and result id, as Label Studio does when a reviewer accepts a prediction.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from detection.core.coco_format import read_coco
from detection.review.diff import iou
from detection.review.label_studio import (
    BOX_TYPE,
    FROM_NAME,
    IMAGE_KEY,
    TO_NAME,
    percent_value,
    pixel_box,
)

KEEP_IOU = 0.5  # the diff's CONFIRM_IOU: a kept box of the right class is a confirmation

GroundTruth = Mapping[str, Sequence[tuple[str, Sequence[float]]]]


def ground_truth(coco: str | Path, images: str | Path) -> dict[str, list[tuple[str, list[float]]]]:
    """image path (`images` / file_name) -> [(class name, pixel xyxy)] of a COCO split.

    Raises:
        InvalidInputError: the COCO file cannot be read.
    """
    data = read_coco(coco)
    names = {c["id"]: c["name"] for c in data["categories"]}
    paths = {i["id"]: str(Path(images) / i["file_name"]) for i in data["images"]}
    truth: dict[str, list[tuple[str, list[float]]]] = {p: [] for p in paths.values()}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        truth[paths[a["image_id"]]].append((names[a["category_id"]], [x, y, x + w, y + h]))
    return truth


def answer_task(
    task: Mapping[str, Any], truth: GroundTruth, width: int, height: int, number: int
) -> list[dict[str, Any]]:
    """The result regions of one task's annotation (see the module docstring).

    Args:
        task: a task of `label_studio_tasks.json` (its first prediction holds the shown boxes).
        truth: image path -> [(class name, pixel xyxy)]; an image not in it has no defect.
        width, height: the image's size in pixels.
        number: the task's number, which makes the ids of drawn boxes unique.
    """
    shown = task["predictions"][0]["result"]
    shown_boxes = [pixel_box(region["value"], width, height) for region in shown]
    result = []
    used: set[int] = set()
    for k, (name, box) in enumerate(truth.get(task["data"][IMAGE_KEY], [])):
        best, overlap = None, 0.0
        for i, model_box in enumerate(shown_boxes):
            o = iou(model_box, box)
            if i not in used and o > overlap:
                best, overlap = i, o
        if best is not None and overlap >= KEEP_IOU:
            used.add(best)
            kept = copy.deepcopy(shown[best])
            kept["value"][BOX_TYPE] = [name]  # a relabel when the class differs
            result.append(kept)
            continue
        result.append(
            {
                "id": f"gt{number}_{k}",
                "type": BOX_TYPE,
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "original_width": width,
                "original_height": height,
                "value": {**percent_value(box, width, height), BOX_TYPE: [name]},
            }
        )
    return result


def simulated_answers(
    tasks: Sequence[Mapping[str, Any]], truth: GroundTruth, width: int, height: int
) -> list[dict[str, Any]]:
    """A full-JSON Label Studio export answering every task from the ground truth.

    Tasks get the ids 1, 2, ... in order; each holds one submitted annotation.
    """
    answers = []
    for number, task in enumerate(tasks, start=1):
        result = answer_task(task, truth, width, height, number)
        annotation = {"id": number, "result": result, "was_cancelled": False}
        answers.append({**task, "id": number, "annotations": [annotation]})
    return answers
