"""Prediction: the detections of one image and the decision they make."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Prediction:
    """Detections of one image in its original pixels, and whether the part passes."""

    boxes: np.ndarray  # (N, 4) float32 xyxy
    scores: np.ndarray  # (N,) float32, decreasing
    labels: np.ndarray  # (N,) int64, 1..K
    defects: np.ndarray  # (N,) bool: score >= the class threshold
    class_names: list[str]  # per detection
    category_ids: list[int]  # per detection, the dataset's category ids
    width: int
    height: int
    image: str | None = None  # the file path, when the input was one

    @property
    def passed(self) -> bool:
        """True when no detection reaches its class threshold."""
        return not bool(self.defects.any())

    @property
    def decision(self) -> str:
        """'pass' or 'fail'."""
        return "pass" if self.passed else "fail"

    def to_record(self) -> dict[str, Any]:
        """The JSON Lines record of this image (boxes rounded to 0.01 px)."""
        detections = [
            {
                "bbox": [round(float(v), 2) for v in box],
                "score": round(float(score), 5),
                "label": int(label),
                "class_name": name,
                "category_id": int(category),
                "fail": bool(defect),
            }
            for box, score, label, name, category, defect in zip(
                self.boxes,
                self.scores,
                self.labels,
                self.class_names,
                self.category_ids,
                self.defects,
                strict=True,
            )
        ]
        return {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "decision": self.decision,
            "detections": detections,
        }
