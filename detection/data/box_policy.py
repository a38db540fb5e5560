"""What converters do with each box: data lint's COCO rules, then clip or reject at the image edge.

Converters raise the first box that breaks the rules (not 4 finite numbers, an empty or inverted
box) as a one-line InvalidInputError in lint's wording. A box reaching outside its image is
clipped to it and counted (``boxes="clip"``, one warning per conversion), or refused
(``boxes="reject"``); one with nothing left inside the image is always refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from detection.core.coco_format import box_problem, outside_image, outside_message
from detection.core.errors import InvalidInputError

BOX_POLICIES = ("clip", "reject")


class ConversionWarning(UserWarning):
    """Something a conversion changed or left out: clipped boxes, files without a partner."""


class BoxPolicy:
    """Checks the boxes of one conversion and counts the clipped ones."""

    def __init__(self, boxes: str = "clip") -> None:
        if boxes not in BOX_POLICIES:
            raise ValueError(f"boxes must be one of {', '.join(BOX_POLICIES)}, not {boxes!r}")
        self.policy = boxes
        self.clipped: list[str] = []

    def check(
        self,
        box: Sequence[float],
        width: float,
        height: float,
        file: str | Path,
        record: str,
        field: str,
    ) -> list[float]:
        """A valid ``[x, y, w, h]`` inside the image, or a one-line InvalidInputError."""
        problem = box_problem(list(box), positive=True)
        if problem is not None:
            raise InvalidInputError(file, problem[1], record=record, field=field)
        x, y, w, h = (float(v) for v in box)
        if not outside_image((x, y, w, h), width, height):
            return [x, y, w, h]
        message = outside_message((x, y, w, h), width, height)
        if self.policy == "reject":
            raise InvalidInputError(
                file, f"{message} (boxes are rejected, not clipped)", record=record, field=field
            )
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(width)), min(y + h, float(height))
        if x1 <= x0 or y1 <= y0:
            raise InvalidInputError(
                file, f"{message}: nothing of it is inside", record=record, field=field
            )
        self.clipped.append(f"{file} {record}")
        return [x0, y0, x1 - x0, y1 - y0]

    def warn(self, source: str | Path) -> None:
        """One warning with the number of boxes clipped, if any."""
        if self.clipped:
            warnings.warn(
                f"{source}: clipped {len(self.clipped)} boxes to their image (the first: "
                f"{self.clipped[0]}); boxes='reject' refuses them instead",
                ConversionWarning,
                stacklevel=3,
            )


def warn_unmatched(what: str, paths: Sequence[str | Path], consequence: str) -> None:
    """One warning for files without a partner, e.g. label files without an image."""
    if paths:
        warnings.warn(
            f"{len(paths)} {what} ({consequence}); the first: {paths[0]}",
            ConversionWarning,
            stacklevel=3,
        )
