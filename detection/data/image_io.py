"""Image decoding: any file OpenCV reads becomes an RGB uint8 HxWx3 array."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from detection.errors import ImageReadError

# A complete JPEG ends with the EOI marker; encoders may append a few padding bytes after it.
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND"
_TAIL_BYTES = 64


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) read from the file header without decoding the pixels."""
    try:
        with warnings.catch_warnings():
            # PIL's decompression-bomb guard is for decoding; reading a header is harmless.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return image.size
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except Image.DecompressionBombError:
        raise ImageReadError(path, "image header says it is too large for PIL to open") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, f"cannot read the image header ({error})") from None


def read_image(
    path: str | Path, max_pixels: int | None = None, *, keep_gray: bool = False
) -> np.ndarray:
    """Decode an image file to an RGB uint8 array of shape (H, W, 3).

    Grayscale becomes three equal channels, alpha is dropped, and 16-bit images keep their
    high byte (``value >> 8``): a fixed scale, so the same sensor value always maps to the
    same 8-bit value (per-image min/max stretching would change contrast between images).
    EXIF orientation is ignored, as in pycocotools and torchvision: boxes refer to the pixels
    as stored. ``max_pixels`` refuses larger images from their header, before decoding.
    ``keep_gray`` returns grayscale files as (H, W), for pipelines that expand them later.
    """
    path = Path(path)
    if max_pixels is not None:
        _check_pixel_count(path, max_pixels)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot read the file ({error.strerror or error})") from None
    if data.size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    _check_complete(path, data)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(path, "not an image OpenCV can decode (corrupt or unknown format)")
    if max_pixels is not None and image.shape[0] * image.shape[1] > max_pixels:
        # Formats PIL cannot parse skip the header check; enforce the limit after decoding.
        raise ImageReadError(path, _too_large(image.shape[1], image.shape[0], max_pixels))
    return to_rgb_uint8(image, path, keep_gray=keep_gray)


def to_rgb_uint8(
    image: np.ndarray, path: str | Path = "<array>", *, keep_gray: bool = False
) -> np.ndarray:
    """Convert an array as OpenCV decodes it (gray, BGR or BGRA, any depth) to RGB uint8.

    With ``keep_gray`` a grayscale image (with or without alpha) comes back as (H, W).
    """
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float32, np.float64):
        # Float images (e.g. TIFF) are taken to be in 0..1, the usual convention.
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageReadError(path, f"unsupported pixel type {image.dtype}")
    if image.ndim == 3 and image.shape[2] in (1, 2):  # gray, gray + alpha
        image = np.ascontiguousarray(image[:, :, 0])
    if image.ndim == 2:
        return image if keep_gray else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise ImageReadError(path, f"unsupported number of channels {channels}")


def _check_complete(path: Path, data: np.ndarray) -> None:
    """Refuse truncated JPEG and PNG files: OpenCV decodes them silently, grey at the bottom."""
    head = data[:8].tobytes()
    tail = data[-_TAIL_BYTES:].tobytes()
    if head.startswith(_JPEG_SOI) and _JPEG_EOI not in tail:
        raise ImageReadError(path, "truncated or corrupt JPEG (no end-of-image marker)")
    if head == _PNG_SIGNATURE and _PNG_IEND not in tail:
        raise ImageReadError(path, "truncated or corrupt PNG (no IEND chunk)")


def _check_pixel_count(path: Path, max_pixels: int) -> None:
    if not os.path.exists(path):
        raise ImageReadError(path, "file not found")
    try:
        width, height = image_size(path)
    except ImageReadError:
        bomb_limit = Image.MAX_IMAGE_PIXELS
        if bomb_limit is not None and max_pixels <= 2 * bomb_limit and _is_bomb(path):
            raise ImageReadError(
                path, f"image has more than max_pixels={max_pixels} pixels"
            ) from None
        return  # PIL cannot parse this header; read_image checks the decoded size instead.
    if width * height > max_pixels:
        raise ImageReadError(path, _too_large(width, height, max_pixels))


def _is_bomb(path: Path) -> bool:
    """True when PIL refused the header for having more than 2 * MAX_IMAGE_PIXELS pixels."""
    try:
        with Image.open(path):
            return False
    except Image.DecompressionBombError:
        return True
    except Exception:
        return False


def _too_large(width: int, height: int, max_pixels: int) -> str:
    return f"image is {width}x{height} = {width * height} pixels, more than max_pixels={max_pixels}"
