"""Images, one set of rules for every caller: which files are images, the pixel limit, safe file
reads, decoding to RGB uint8, and arrays / PIL images / tensors -> model input tensors.

The rules: grayscale becomes three equal channels, alpha is dropped, 16-bit pixels keep their
high byte (``value >> 8``: a fixed scale, so one sensor value always maps to one 8-bit value),
and float pixels must be finite and lie in 0..1. Only regular files are ever opened: a FIFO
blocks its reader forever, and a device may never end.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import cv2
import numpy as np
import torch
from PIL import Image

from detection.core.errors import ImageReadError, InvalidInputError
from detection.core.files import not_regular

# Extensions OpenCV decodes; compared lower-case.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm"}
)
# The default of every `max_pixels` option: larger images are refused from their header, before
# decoding (a 400 KB PNG can declare 20000x20000 pixels, 1.2 GB decoded).
MAX_PIXELS = 100_000_000

ImageInput = Union[str, Path, np.ndarray, Image.Image, torch.Tensor]  # noqa: UP007 - runtime alias

# A complete JPEG ends with the EOI marker; encoders may append a few padding bytes after it.
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND"
_TAIL_BYTES = 64
_FLOAT_SLACK = 1e-3  # arithmetic that should give 1.0 may give 1.0000001
_PIXEL_DTYPES = "uint8, uint16 or float in 0..1"


def open_regular(path: str | Path) -> BinaryIO:
    """Open a non-empty regular file for binary reading; anything else is an ImageReadError.

    The mode is checked before opening (opening a device can act on it), and again on the open
    descriptor: a non-blocking open returns at once even if a FIFO replaced the file meanwhile.
    """
    try:
        problem = not_regular(os.stat(path).st_mode, "an image file")
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as error:
        raise ImageReadError(path, f"cannot read the file ({error.strerror or error})") from None
    if problem is None:
        try:
            fd = os.open(
                path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
            )
        except OSError as error:
            raise ImageReadError(
                path, f"cannot open the file ({error.strerror or error})"
            ) from None
        status = os.fstat(fd)
        problem = not_regular(status.st_mode, "an image file")
        if problem is None and status.st_size == 0:
            problem = "file is empty (0 bytes)"
        if problem is None:
            return os.fdopen(fd, "rb")
        os.close(fd)
    raise ImageReadError(path, problem)


def image_size(path: str | Path, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) from the file header without decoding; larger than max_pixels is an error."""
    with open_regular(path) as file:
        size = _header_size(file)
    if size is None:
        raise ImageReadError(path, "cannot read the image header (corrupt or not an image)")
    _check_pixels(path, size, max_pixels, ImageReadError)
    return size


def read_image(
    path: str | Path, max_pixels: int | None = MAX_PIXELS, *, keep_gray: bool = False
) -> np.ndarray:
    """Decode a regular image file to an RGB uint8 array of shape (H, W, 3).

    ``max_pixels`` (None: no limit) refuses larger images from their header, before decoding.
    EXIF orientation is ignored, as in pycocotools and torchvision: boxes refer to the pixels
    as stored. ``keep_gray`` returns grayscale files as (H, W), for pipelines that expand them.
    """
    with open_regular(path) as file:
        if max_pixels is not None:
            size = _header_size(file)
            if size is not None:
                _check_pixels(path, size, max_pixels, ImageReadError)
            file.seek(0)
        try:
            data = np.frombuffer(file.read(), dtype=np.uint8)
        except OSError as error:
            raise ImageReadError(
                path, f"cannot read the file ({error.strerror or error})"
            ) from None
    _check_complete(path, data)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(path, "not an image OpenCV can decode (corrupt or unknown format)")
    # Formats PIL cannot parse skip the header check; the limit holds after decoding too.
    _check_pixels(path, (image.shape[1], image.shape[0]), max_pixels, ImageReadError)
    return to_rgb_uint8(image, path, keep_gray=keep_gray)


def to_rgb_uint8(
    image: np.ndarray, path: str | Path = "<array>", *, keep_gray: bool = False
) -> np.ndarray:
    """An array as OpenCV decodes it (gray, BGR or BGRA; uint8, uint16 or float) -> RGB uint8.

    With ``keep_gray`` a grayscale image (with or without alpha) comes back as (H, W).
    """
    image = _pixels(image, str(path), ImageReadError, bgr=True, keep_gray=keep_gray)
    if image.dtype != np.uint8:
        image = (image * 255.0 + 0.5).astype(np.uint8)
    return image


def image_tensor(
    image: ImageInput,
    name: str = "image",
    *,
    bgr: bool = False,
    max_pixels: int | None = MAX_PIXELS,
) -> tuple[torch.Tensor, str | None]:
    """Any supported input -> (RGB CHW tensor, uint8 or float in 0..1; its file path or None).

    Paths are decoded with `read_image`; numpy arrays are RGB unless `bgr` (OpenCV's order);
    PIL images keep 16-bit and float pixels; tensors are CHW with 1 or 3 channels. Anything
    else (floats outside 0..1, NaN, an empty image, other dtypes or shapes, more than
    ``max_pixels``) raises an InvalidInputError (a ValueError) that starts with ``name``.
    """
    if isinstance(image, str | Path):
        return to_tensor(read_image(image, max_pixels), None), str(image)
    if isinstance(image, Image.Image):
        image = _pil_pixels(image, name)
        bgr = False
    if isinstance(image, np.ndarray):
        array = _pixels(image, name, InvalidInputError, bgr=bgr, max_pixels=max_pixels)
        return to_tensor(array, None), None
    if isinstance(image, torch.Tensor):
        return check_image_tensor(image, name, max_pixels), None
    raise TypeError(
        f"{name}: unsupported image type {type(image).__name__}; "
        "use a path, a numpy array, a PIL image or a CHW tensor"
    )


def check_image_tensor(
    image: torch.Tensor, name: str = "image", max_pixels: int | None = MAX_PIXELS
) -> torch.Tensor:
    """A CHW uint8 or float 0..1 tensor with 1 or 3 channels, as 3 channels; else a one-line error."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise InvalidInputError(
            name,
            f"expected a CHW image tensor with 1 or 3 channels, got shape {tuple(image.shape)}",
        )
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise InvalidInputError(
            name, f"unsupported tensor dtype {image.dtype}; use uint8 or float in 0..1"
        )
    if image.numel() == 0:
        raise InvalidInputError(name, f"has no pixels (shape {tuple(image.shape)})")
    _check_pixels(name, (image.shape[2], image.shape[1]), max_pixels, InvalidInputError)
    if image.is_floating_point():
        low, high = torch.aminmax(image.detach())
        _check_float_range(name, float(low), float(high))
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def to_tensor(image: np.ndarray, dtype: torch.dtype | None = torch.float32) -> torch.Tensor:
    """An HxWx3 (or HxW gray) array -> a [C,H,W] tensor.

    float32: [3,H,W] in 0..1. uint8: a [C,H,W] view without a copy, C = 1 for gray, to be
    finished by ``to_float_image`` on the device. None: the array's own dtype.
    """
    # torch refuses to share read-only memory (e.g. PIL's buffers)
    image = np.ascontiguousarray(image) if image.flags.writeable else image.copy()
    tensor = torch.from_numpy(image[:, :, None] if image.ndim == 2 else image).permute(2, 0, 1)
    if dtype == torch.float32 and tensor.dtype == torch.uint8:
        return to_float_image(tensor)
    return tensor


def to_float_image(image: torch.Tensor) -> torch.Tensor:
    """A uint8 [C,H,W] image (C = 1 or 3) as contiguous float32 [3,H,W] in 0..1."""
    if image.dtype != torch.uint8:
        return image
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    return image.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


def _pixels(
    image: np.ndarray,
    name: str,
    error: type[InvalidInputError],
    *,
    bgr: bool,
    keep_gray: bool = False,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Apply the rules to an HxW or HxWxC array: RGB (or HxW gray with keep_gray), uint8 or float32."""
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise error(
            name, f"expected an HxW or HxWxC image array (C 1 to 4), got shape {image.shape}"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise error(name, f"has no pixels (shape {image.shape})")
    _check_pixels(name, (image.shape[1], image.shape[0]), max_pixels, error)
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype in (np.float16, np.float32, np.float64):
        _check_float_range(name, float(image.min()), float(image.max()), error)
        image = image.astype(np.float32, copy=False)
    elif image.dtype != np.uint8:
        raise error(name, f"unsupported pixel type {image.dtype}; use {_PIXEL_DTYPES}")
    if image.ndim == 3 and image.shape[2] in (1, 2):  # gray, gray + alpha
        image = np.ascontiguousarray(image[:, :, 0])
    if image.ndim == 2:
        return np.ascontiguousarray(image) if keep_gray else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    image = np.ascontiguousarray(image)  # cv2 wants contiguous rows (a flipped view is not)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if bgr else image


def _pil_pixels(image: Image.Image, name: str) -> np.ndarray:
    """A PIL image's pixels: 16-bit and float modes as they are, everything else as RGB uint8."""
    if image.mode.startswith("I;16") or image.mode == "F":
        return np.asarray(image)
    if image.mode == "I":
        pixels = np.asarray(image)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 0xFFFF):
            raise InvalidInputError(name, "32-bit integer pixels outside 0..65535")
        return pixels.astype(np.uint16)
    return np.asarray(image.convert("RGB"))


def _check_float_range(
    name: str, low: float, high: float, error: type[InvalidInputError] = InvalidInputError
) -> None:
    """Floats must be finite and in 0..1: a 0..255 float image would look white to the model."""
    if not (np.isfinite(low) and np.isfinite(high)):
        raise error(name, "has NaN or infinite pixel values")
    if low < -_FLOAT_SLACK or high > 1.0 + _FLOAT_SLACK:
        hint = " (divide 0..255 values by 255, or pass uint8)" if high > 1.0 else ""
        raise error(name, f"float pixels must lie in 0..1, found {low:g}..{high:g}{hint}")


def _check_pixels(
    name: str | Path,
    size: tuple[int, int],
    max_pixels: int | None,
    error: type[InvalidInputError],
) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise error(
            name,
            f"image is {width}x{height} = {width * height} pixels, more than max_pixels={max_pixels}",
        )


def _check_complete(path: str | Path, data: np.ndarray) -> None:
    """Refuse truncated JPEG and PNG files: OpenCV decodes them silently, grey at the bottom."""
    head = data[:8].tobytes()
    tail = data[-_TAIL_BYTES:].tobytes()
    if head.startswith(_JPEG_SOI) and _JPEG_EOI not in tail:
        raise ImageReadError(path, "truncated or corrupt JPEG (no end-of-image marker)")
    if head == _PNG_SIGNATURE and _PNG_IEND not in tail:
        raise ImageReadError(path, "truncated or corrupt PNG (no IEND chunk)")


def _header_size(file: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from an open file's header, or None when PIL cannot parse it."""
    with warnings.catch_warnings():
        # PIL's decompression-bomb guard is for decoding; reading a header is harmless.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(file) as image:
                return image.size
        except Image.DecompressionBombError:
            return _size_past_bomb_guard(file)
        except (OSError, SyntaxError, ValueError, EOFError):
            return None


def _size_past_bomb_guard(file: BinaryIO) -> tuple[int, int] | None:
    """The header size of an image PIL's open() refuses as a bomb: its format plugins, called
    the way open() calls them, only parse the header; the limit to apply is ours, not PIL's."""
    Image.init()
    file.seek(0)
    prefix = file.read(16)
    for format_id in Image.ID:
        factory, accept = Image.OPEN[format_id]
        accepted = accept(prefix) if accept is not None else True
        if not accepted or isinstance(accepted, str):  # a str is PIL's "maybe" warning
            continue
        file.seek(0)
        try:
            return factory(file, "").size
        except Exception:  # noqa: BLE001 - any plugin that cannot parse it is simply not the one
            continue
    return None
