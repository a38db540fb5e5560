"""JPEG copies of the inspected images for the page: small thumbnails and larger previews.

The page draws the boxes itself over these copies (so they follow the what-if thresholds), and
it loads them from inside the report folder only: the folder can be zipped or mailed and still
shows every image. Sizes measured by scripts/bench_report.py on generated 1600x1200
camera-like images: a 256 px thumbnail at quality 80 is about 5 kB, a 960 px preview about
35 kB; drawing the boxes on the page instead of into the JPEGs costs nothing in size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from detection.core.errors import DetectionError
from detection.core.images import MAX_PIXELS, read_image

THUMB_DIR = "thumbs"
PREVIEW_DIR = "full"
THUMB_SIDE = 256  # px, the longer side; the gallery shows them at 128-180 CSS px (HiDPI-sharp)
PREVIEW_SIDE = 960  # px, the longer side of the image a click opens
JPEG_QUALITY = 80

# Per image: 1 = thumbnail and preview written, 0 = source unreadable (a placeholder),
# -1 = not made (beyond the report's image limit; also a placeholder).
MADE, UNREADABLE, NOT_MADE = 1, 0, -1


def _scaled(image: np.ndarray, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise DetectionError(f"{path}: JPEG encoding failed")
    path.write_bytes(data.tobytes())


def write_copies(source: str, index: int, out_dir: Path) -> int:
    """Thumbnail and preview of one image as ``thumbs/<index>.jpg`` and ``full/<index>.jpg``;
    returns MADE, or UNREADABLE when the source is missing or cannot be decoded."""
    try:
        image = read_image(source, MAX_PIXELS)
    except (DetectionError, OSError, ValueError):
        return UNREADABLE
    _write_jpeg(out_dir / THUMB_DIR / f"{index}.jpg", _scaled(image, THUMB_SIDE))
    _write_jpeg(out_dir / PREVIEW_DIR / f"{index}.jpg", _scaled(image, PREVIEW_SIDE))
    return MADE


def write_all(
    sources: Sequence[str],
    wanted: Sequence[int],
    out_dir: Path,
    progress: Callable[[int], None] | None = None,
) -> list[int]:
    """Copies of the images ``wanted`` (indices into ``sources``); the status of every image."""
    (out_dir / THUMB_DIR).mkdir(parents=True, exist_ok=True)
    (out_dir / PREVIEW_DIR).mkdir(parents=True, exist_ok=True)
    status = [NOT_MADE] * len(sources)
    for index in wanted:
        status[index] = write_copies(sources[index], index, out_dir)
        if progress is not None:
            progress(1)
    return status
