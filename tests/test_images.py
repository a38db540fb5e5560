"""detection.core.images: every readable file becomes RGB uint8 HxWx3 and every good array, PIL image or
tensor a model tensor; every bad one (FIFO, device, huge header, float 0..255, NaN...) a one-line
error naming it. Also lint and the dataset on the same bad files."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from bad_images import HUGE_SIDE, within, write_bad_files, write_huge_png
from coco_files import truncate_file, write_image
from PIL import Image

from detection.commands.data import main as data_main
from detection.core.errors import ImageReadError, InvalidInputError
from detection.core.images import (
    MAX_PIXELS,
    image_size,
    image_tensor,
    read_image,
    to_float_image,
    to_tensor,
)
from detection.data.coco import CocoDetection
from detection.data.lint import lint_coco


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


def _one_line_naming(error: BaseException, name: str, words: str) -> None:
    message = str(error)
    assert message.startswith(f"{name}: ") and "\n" not in message, message
    assert any(word in message for word in words.split("|")), message


def test_every_bad_file_is_a_one_line_error_and_nothing_blocks(tmp_path):
    bad = write_bad_files(tmp_path)
    for path, words in bad.items():
        with pytest.raises(ImageReadError) as info:
            within(10, lambda path=path: read_image(path))
        _one_line_naming(info.value, path, words)
    # Header reads refuse what is not a regular file, and the pixel limit, the same way.
    for path, words in bad.items():
        if words in ("named pipe", "character device", "max_pixels"):
            with pytest.raises(ImageReadError) as info:
                within(10, lambda path=path: image_size(path, max_pixels=MAX_PIXELS))
            _one_line_naming(info.value, path, words)


def test_a_socket_is_not_read(tmp_path):
    folder = tempfile.mkdtemp(dir="/tmp")  # a socket path must be short
    path = os.path.join(folder, "s.png")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(path)
        with pytest.raises(ImageReadError, match="is a socket, not a regular file"):
            within(10, lambda: read_image(path))
    finally:
        server.close()
        os.unlink(path)
        os.rmdir(folder)


def test_a_huge_header_is_refused_before_decoding(tmp_path):
    path = write_huge_png(tmp_path / "huge.png")
    assert path.stat().st_size < 2000
    # Past PIL's own decompression-bomb guard, the header still gives the size.
    assert image_size(path) == (HUGE_SIDE, HUGE_SIDE)
    for call in (lambda: read_image(path), lambda: image_size(path, MAX_PIXELS)):
        with pytest.raises(ImageReadError, match=f"{HUGE_SIDE}x{HUGE_SIDE} = .* max_pixels="):
            call()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: np.full((8, 8, 3), 255.0, np.float32), "must lie in 0..1, found 255..255"),
        (lambda: torch.full((3, 8, 8), 200.0), "must lie in 0..1"),
        (lambda: np.full((8, 8, 3), -0.5), "must lie in 0..1"),
        (lambda: Image.fromarray(np.full((8, 8), 255.0, np.float32), mode="F"), "0..1"),
        (lambda: np.full((8, 8, 3), np.nan, np.float32), "NaN"),
        (lambda: torch.tensor([[[0.5, float("inf")]]] * 3), "NaN or infinite"),
        (lambda: np.zeros((0, 0, 3), np.uint8), "no pixels"),
        (lambda: np.zeros((4, 0), np.float32), "no pixels"),
        (lambda: torch.zeros(3, 0, 5), "no pixels"),
        (lambda: np.zeros((8, 8, 3), np.int64), "unsupported pixel type int64"),
        (lambda: np.zeros((8, 8), bool), "unsupported pixel type bool"),
        (lambda: torch.zeros(3, 8, 8, dtype=torch.int32), "unsupported tensor dtype"),
        (lambda: torch.zeros(8, 8, 3), "CHW"),
        (lambda: np.zeros((8, 8, 5), np.uint8), "HxWxC"),
        (lambda: np.zeros((2, 8, 8, 3), np.uint8), "HxWxC"),
        (lambda: np.zeros((30, 20, 3), np.uint8), "30 = 600 pixels, more than max_pixels=599"),
        (lambda: torch.zeros(3, 30, 20, dtype=torch.uint8), "max_pixels=599"),
    ],
)
def test_bad_in_memory_images_are_value_errors_naming_the_input(make, words):
    with pytest.raises(InvalidInputError) as info:
        image_tensor(make(), "image #4", max_pixels=599)
    assert isinstance(info.value, ValueError)
    _one_line_naming(info.value, "image #4", words)


def test_every_good_input_kind_gives_the_same_model_input():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    expected = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    expected_gray = torch.from_numpy(gray).float().expand(3, -1, -1) / 255
    cases = {
        "uint8": (rgb, expected),
        "bgr": (np.ascontiguousarray(rgb[..., ::-1]), expected),
        "float 0..1": (rgb / 255.0, expected),
        "float16": ((rgb / 255.0).astype(np.float16), expected),
        "uint16": (rgb.astype(np.uint16) << 8, expected),
        "rgba": (np.dstack([rgb, np.zeros_like(gray)]), expected),
        "tensor": (expected.clone(), expected),
        "uint8 tensor": (torch.from_numpy(rgb).permute(2, 0, 1), expected),
        "gray": (gray, expected_gray),
        "gray tensor": (torch.from_numpy(gray)[None], expected_gray),
        "PIL RGB": (Image.fromarray(rgb), expected),
        "PIL 16-bit": (Image.fromarray(gray.astype(np.uint16) << 8), expected_gray),
    }
    for name, (image, want) in cases.items():
        tensor, file = image_tensor(image, name, bgr=name == "bgr")
        assert file is None and tensor.shape == (3, 6, 7), name
        np.testing.assert_allclose(to_float_image(tensor), want, atol=2e-3, err_msg=name)


def test_to_tensor_keeps_uint8_and_gray_for_the_device():
    gray = np.full((4, 5), 51, np.uint8)
    view = to_tensor(gray, torch.uint8)
    assert view.shape == (1, 4, 5) and view.dtype == torch.uint8
    floats = to_float_image(view)
    assert floats.shape == (3, 4, 5) and torch.allclose(floats, torch.full((3, 4, 5), 0.2))


def _coco_with_bad_files(root: Path) -> tuple[Path, Path, dict[str, str]]:
    """A COCO json naming one good image and each bad file (declared 8x8, the huge one 20000^2)."""
    images = root / "images"
    write_image(images / "good.png", 40, 30)
    bad = write_bad_files(images)
    records = [{"id": 1, "file_name": "good.png", "width": 40, "height": 30}]
    for index, path in enumerate(sorted(bad), start=2):
        side = HUGE_SIDE if bad[path] == "max_pixels" else 8
        name = Path(path).name
        records.append({"id": index, "file_name": name, "width": side, "height": side})
    coco = {"images": records, "annotations": [], "categories": [{"id": 1, "name": "dent"}]}
    annotation_file = root / "coco.json"
    annotation_file.write_text(json.dumps(coco))
    return annotation_file, images, bad


def test_lint_reports_each_bad_file_with_and_without_decode(tmp_path, capsys):
    annotation_file, images, bad = _coco_with_bad_files(tmp_path)
    expected = {Path(p).name: words for p, words in bad.items()}
    for decode in (False, True):
        result = within(
            60, lambda decode=decode: lint_coco(annotation_file, images, decode_images=decode)
        )
        found = {
            f.message.split(":")[0]: f for f in result.findings if f.kind == "unreadable-image"
        }
        names = {Path(p).name for p in found}
        # A header may not show a truncation; everything else is refused from the header too.
        assert names == set(expected) if decode else names >= set(expected) - {"truncated.jpg"}
        for path, finding in found.items():
            assert any(w in finding.message for w in expected[Path(path).name].split("|"))
    # The CLI: the huge header is an error either way, and fine with the limit lifted.
    argv = ["lint", str(annotation_file), "--images", str(images)]
    assert data_main(argv) == 1 and data_main([*argv, "--decode"]) == 1
    out = capsys.readouterr().out
    assert out.count(f"{HUGE_SIDE}x{HUGE_SIDE} = 400000000 pixels, more than max_pixels") == 2
    data_main([*argv, "--max-pixels", "0"])
    assert "huge.png" not in capsys.readouterr().out


def test_dataset_refuses_each_bad_file_naming_path_and_record(tmp_path):
    annotation_file, images, bad = _coco_with_bad_files(tmp_path)
    dataset = CocoDetection(annotation_file, images)
    image, _ = dataset[0]
    assert image.shape == (3, 30, 40)
    for index in range(1, len(dataset)):
        path = str(dataset.image_path(index))
        with pytest.raises(ImageReadError) as info:
            within(10, lambda index=index: dataset[index])
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert f"id {dataset.image_ids[index]}" in message and "field 'file_name'" in message
        assert any(word in message for word in bad[path].split("|")), message
    # Sizes missing from the json are read from the header: a FIFO is refused there too.
    data = json.loads(annotation_file.read_text())
    fifo = next(r for r in data["images"] if r["file_name"] == "part.png")
    del fifo["width"], fifo["height"]
    annotation_file.write_text(json.dumps(data))
    with pytest.raises(ImageReadError, match=f"part.png: .*id {fifo['id']}.* named pipe"):
        within(10, lambda: CocoDetection(annotation_file, images))


def test_float_tiff_files_follow_the_float_rule(tmp_path):
    scaled = tmp_path / "scaled.tiff"
    assert cv2.imwrite(str(scaled), np.full((4, 5), 0.5, np.float32))
    assert (read_image(scaled) == 128).all()
    raw = tmp_path / "raw.tiff"
    assert cv2.imwrite(str(raw), np.full((4, 5), 200.0, np.float32))
    with pytest.raises(ImageReadError) as info:
        read_image(raw)
    _one_line_naming(info.value, str(raw), "must lie in 0..1, found 200..200")
