"""Drawing detections on images for people to look at (OpenCV, RGB in and out)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from detection.core.errors import OutputError
from detection.core.run_folder import output_folder, temporary_path
from detection.inference.predictor import Prediction

# Distinct, saturated RGB colours; class i uses PALETTE[i % len(PALETTE)].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)


def draw_boxes(
    image: np.ndarray,
    boxes: np.ndarray,
    captions: Sequence[str],
    labels: Sequence[int],
) -> np.ndarray:
    """A copy of an RGB uint8 image with each box outlined in its label's colour and captioned."""
    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    height, width = canvas.shape[:2]
    # Line width and font grow with the image so captions stay legible on large photos.
    thickness = max(1, round(max(height, width) / 400))
    font_scale = max(0.35, max(height, width) / 1600)
    for box, caption, label in zip(boxes, captions, labels, strict=True):
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        color = PALETTE[int(label) % len(PALETTE)]
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, thickness)
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        # Caption above the box, or inside it when the box touches the top edge.
        ty = y0 - base - 2 if y0 - th - base - 2 >= 0 else y0 + th + 2
        cv2.rectangle(canvas, (x0, ty - th - 1), (x0 + tw + 2, ty + base), color, -1)
        cv2.putText(
            canvas, caption, (x0 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1
        )
    return canvas


def draw_prediction(
    image: np.ndarray, prediction: Prediction, defects_only: bool = True
) -> np.ndarray:
    """Draw a Prediction's detections, by default only those that fail the part."""
    keep = prediction.defects if defects_only else np.ones(len(prediction.scores), dtype=bool)
    indices = np.flatnonzero(keep)
    indices = indices[
        np.argsort(prediction.scores[indices], kind="stable")
    ]  # best drawn last, on top
    captions = [f"{prediction.class_names[i]} {prediction.scores[i]:.2f}" for i in indices]
    return draw_boxes(
        image, prediction.boxes[indices], captions, prediction.labels[indices].tolist()
    )


def save_image(path: str | Path, image: np.ndarray, jpeg_quality: int = 90) -> None:
    """Write an RGB uint8 image through a temporary file; the format follows the extension.

    Raises:
        OutputError: the image cannot be encoded or written (a full disk, a read-only folder);
        neither a partial image nor a temporary file is left behind.
    """
    path = Path(path)
    jpeg = path.suffix.lower() in {".jpg", ".jpeg"}
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if jpeg else []
    try:
        ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    except cv2.error:
        ok = False
    if not ok:
        raise OutputError(path, f"cannot encode an image as '{path.suffix}'")
    output_folder(path.parent)
    tmp = temporary_path(path)
    try:
        tmp.write_bytes(encoded.tobytes())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise OutputError.from_os_error(path, error) from None
