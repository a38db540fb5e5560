"""The export manifest: what a review export showed, so that an import can be checked against it.

Label Studio's own export holds only prediction ids, not the boxes (measured, 1.23), and CVAT
keeps no box ids at all, so the model's boxes, the job's decisions and the lot's counts (for the
audit's whole-lot estimate) travel in `review_manifest.json` beside the task files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detection.core.coco_format import read_json
from detection.core.errors import InvalidInputError
from detection.core.run_folder import write_atomic

MANIFEST_FILE = "review_manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelBox:
    """One detection shown to the reviewer: a stable id, its class, pixel xyxy box and score."""

    id: str
    class_name: str
    bbox: tuple[float, float, float, float]
    score: float
    fail: bool


@dataclass(frozen=True)
class ReviewImage:
    """One exported image: where it is, the job's decision, why it was chosen, the boxes shown."""

    image: str  # the path as the inspect job recorded it; the key of the task
    width: int
    height: int
    decision: str  # "pass" or "fail"
    reasons: tuple[str, ...]  # every rule that chose it, the deciding (first) one first
    uncertainty: float  # 0..1; Label Studio sorts its queue by it
    boxes: tuple[ModelBox, ...]


@dataclass
class Manifest:
    """Everything an import needs to know about the export it reads."""

    export_id: str
    model_version: str
    classes: dict[str, int]  # class name -> COCO category id, in the model's order
    thresholds: dict[str, float]
    band: dict[str, float]
    lot: dict[str, int]  # images, passed, failed of the whole inspect job
    audit: dict[str, Any]  # fraction, seed, sampled (passed images drawn)
    images: list[ReviewImage] = field(default_factory=list)
    project_id: int | None = None  # the Label Studio project the tasks were pushed to, if any

    def by_image(self) -> dict[str, ReviewImage]:
        """The exported images by their key."""
        return {item.image: item for item in self.images}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    def write(self, folder: Path) -> Path:
        """Write `folder/review_manifest.json` atomically; returns its path."""
        path = folder / MANIFEST_FILE
        write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path


def new_export_id(images: list[str], model_version: str) -> str:
    """An id for one export: the same images and model give the same id."""
    digest = hashlib.sha256(json.dumps([model_version, sorted(images)]).encode())
    return digest.hexdigest()[:16]


def box_id(export_id: str, image: str, index: int) -> str:
    """A stable result id for a shown box (Label Studio keeps it when a reviewer edits the box)."""
    return hashlib.sha256(f"{export_id}:{image}:{index}".encode()).hexdigest()[:10]


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest file (or the one in a folder).

    Raises:
        InvalidInputError: missing, malformed or of another format version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        raise InvalidInputError(
            path, "not a review manifest of this version", field="format_version"
        )
    try:
        images = [
            ReviewImage(
                image=item["image"],
                width=int(item["width"]),
                height=int(item["height"]),
                decision=item["decision"],
                reasons=tuple(item["reasons"]),
                uncertainty=float(item["uncertainty"]),
                boxes=tuple(
                    ModelBox(b["id"], b["class_name"], tuple(b["bbox"]), b["score"], b["fail"])
                    for b in item["boxes"]
                ),
            )
            for item in data["images"]
        ]
        return Manifest(
            export_id=data["export_id"],
            model_version=data["model_version"],
            classes=dict(data["classes"]),
            thresholds=dict(data["thresholds"]),
            band=dict(data["band"]),
            lot=dict(data["lot"]),
            audit=dict(data["audit"]),
            images=images,
            project_id=data.get("project_id"),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidInputError(path, f"incomplete review manifest ({error!r})") from None
