"""What a reviewer said about one exported image, whatever tool they said it in."""

from __future__ import annotations

from dataclasses import dataclass, field

ANNOTATED = "annotated"
SKIPPED = "skipped"  # skipped or cancelled in the tool
UNANNOTATED = "unannotated"  # nobody has answered the task yet
STATUSES = (ANNOTATED, SKIPPED, UNANNOTATED)


@dataclass(frozen=True)
class ReviewedBox:
    """A box the reviewer kept or drew: pixel xyxy, its class, and the id of the shown box it
    came from when the tool keeps ids (Label Studio's full JSON does; JSON-MIN and CVAT do not)."""

    class_name: str
    bbox: tuple[float, float, float, float]
    id: str | None = None


@dataclass
class ReviewedTask:
    """One task of a review export, mapped back to the exported image it shows."""

    task_id: str
    image: str  # the manifest's image key
    status: str
    boxes: list[ReviewedBox] = field(default_factory=list)
