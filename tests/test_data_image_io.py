"""read_image: every readable file becomes RGB uint8 HxWx3; every bad one a one-line error."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from coco_fixtures import truncate_file, write_image

from detection.data.image_io import image_size, read_image
from detection.errors import ImageReadError


def test_color_jpeg_is_rgb_uint8(tmp_path):
    bgr = np.zeros((10, 12, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    path = tmp_path / "blue.png"
    cv2.imwrite(str(path), bgr)
    image = read_image(path)
    assert image.shape == (10, 12, 3) and image.dtype == np.uint8
    assert (image[..., 2] == 255).all() and (image[..., :2] == 0).all()


def test_grayscale_becomes_three_equal_channels(tmp_path):
    path = write_image(tmp_path / "g.png", 20, 10, kind="gray")
    image = read_image(path)
    assert image.shape == (10, 20, 3) and image.dtype == np.uint8
    gray = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], gray)


def test_16_bit_keeps_the_high_byte(tmp_path):
    path = write_image(tmp_path / "g16.png", 20, 10, kind="gray16")
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    image = read_image(path)
    assert image.shape == (10, 20, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 0], (raw >> 8).astype(np.uint8))


def test_alpha_is_dropped(tmp_path):
    path = write_image(tmp_path / "a.png", 20, 10, kind="rgba")
    bgra = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    image = read_image(path)
    assert image.shape == (10, 20, 3)
    np.testing.assert_array_equal(image, bgra[..., 2::-1])


def test_image_size_reads_the_header(tmp_path):
    path = write_image(tmp_path / "x.jpg", 33, 21)
    assert image_size(path) == (33, 21)


def _bad_files(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image\n")
    return {
        "missing": (tmp_path / "missing.jpg", "not found"),
        "empty": (empty, "empty"),
        "truncated jpeg": (truncate_file(write_image(tmp_path / "t.jpg", 64, 48)), "truncated"),
        "truncated png": (
            truncate_file(write_image(tmp_path / "t.png", 64, 48, kind="gray")),
            "truncated",
        ),
        "not an image": (text, "decode"),
        "directory": (tmp_path, "directory"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "empty", "truncated jpeg", "truncated png", "not an image", "directory"]
)
def test_bad_files_raise_one_line_errors_naming_the_path(tmp_path, case):
    path, words = _bad_files(tmp_path)[case]
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and words in message
    assert "\n" not in message


def test_max_pixels_refuses_large_images(tmp_path):
    path = write_image(tmp_path / "big.jpg", 40, 30)
    assert read_image(path, max_pixels=1200).shape == (30, 40, 3)
    with pytest.raises(ImageReadError, match="max_pixels=1199"):
        read_image(path, max_pixels=1199)


@pytest.mark.parametrize(
    ("kind", "shape"), [("gray", (10, 20)), ("gray16", (10, 20)), ("rgba", (10, 20, 3))]
)
def test_keep_gray_leaves_grayscale_single_channel(tmp_path, kind, shape):
    path = write_image(tmp_path / "x.png", 20, 10, kind=kind)
    image = read_image(path, keep_gray=True)
    assert image.shape == shape and image.dtype == np.uint8
    np.testing.assert_array_equal(
        read_image(path)[..., 0], image if image.ndim == 2 else image[..., 0]
    )
