"""VOC and YOLO <-> COCO conversion: round trips keep every box, conventions are explicit."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detection.commands.data import main as data_main
from detection.core.errors import InvalidInputError
from detection.data import formats
from detection.data.synthetic import generate_dataset


def _boxes_by_file(coco: dict) -> dict[str, list[tuple[str, list[float]]]]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    out: dict[str, list] = {im["file_name"]: [] for im in coco["images"]}  # negatives included
    for ann in coco["annotations"]:
        out[files[ann["image_id"]]].append((names[ann["category_id"]], ann["bbox"]))
    return out  # converters keep the order of boxes within an image


def _assert_same_boxes(a: dict, b: dict, tol: float) -> None:
    boxes_a, boxes_b = _boxes_by_file(a), _boxes_by_file(b)
    assert boxes_a.keys() == boxes_b.keys()
    for file_name, items in boxes_a.items():
        other = boxes_b[file_name]
        assert [name for name, _ in items] == [name for name, _ in other], file_name
        np.testing.assert_allclose([box for _, box in items], [box for _, box in other], atol=tol)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A small synthetic dataset with some sub-pixel boxes, as VOC/YOLO files rarely are integral."""
    root = tmp_path_factory.mktemp("synth")
    paths = generate_dataset(
        root, num_images=12, image_size=(96, 80), seed=7, splits={"train": 1.0}
    )
    coco = json.loads(paths["train"].read_text())
    for i, ann in enumerate(coco["annotations"][::2]):
        x, y, w, h = ann["bbox"]
        ann["bbox"] = [x + 0.25, y + 0.5, w - 0.75 - 0.1 * (i % 3), h - 0.5]
    assert len(coco["annotations"]) >= 12 and len(coco["images"]) == 12
    return root / "images", coco


def test_voc_round_trip_keeps_every_box(tmp_path: Path, dataset: tuple[Path, dict]) -> None:
    images, coco = dataset
    written = formats.coco_to_voc(coco, tmp_path / "voc")
    assert len(written) == len(coco["images"])  # negatives get an XML too
    classes = [c["name"] for c in coco["categories"]]
    back = formats.voc_to_coco(images, tmp_path / "voc", classes)
    _assert_same_boxes(coco, back, tol=1e-9)
    assert {(im["file_name"], im["width"], im["height"]) for im in back["images"]} == {
        (im["file_name"], im["width"], im["height"]) for im in coco["images"]
    }


def test_yolo_round_trip_keeps_every_box(tmp_path: Path, dataset: tuple[Path, dict]) -> None:
    images, coco = dataset
    formats.coco_to_yolo(coco, tmp_path / "yolo")
    classes = formats.read_classes(tmp_path / "yolo" / "classes.txt")
    assert classes == ["scratch", "spot", "crack", "dent"]
    back = formats.yolo_to_coco(images, tmp_path / "yolo", classes)
    # Normalized coordinates are written with 8 decimals: 1e-8 of 96 px.
    _assert_same_boxes(coco, back, tol=1e-5)
    assert len(back["images"]) == len(coco["images"])


def test_voc_uses_one_based_inclusive_pixels(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((50, 100, 3), np.uint8))
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><size><width>100</width><height>50</height></size>"
        "<object><name>dent</name><difficult>1</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>20</ymax></bndbox></object>"
        "</annotation>"
    )
    coco = formats.voc_to_coco(tmp_path / "img", tmp_path / "xml", ["spot", "dent"])
    (ann,) = coco["annotations"]
    # Pixels 1..10 (1-based) are 0-based pixels 0..9, the continuous span [0, 10).
    assert ann["bbox"] == [0.0, 0.0, 10.0, 20.0]
    assert ann["category_id"] == 2 and ann["difficult"] == 1
    formats.coco_to_voc(coco, tmp_path / "again")
    text = (tmp_path / "again" / "a.xml").read_text()
    assert (
        "<xmin>1</xmin>" in text
        and "<xmax>10</xmax>" in text
        and "<difficult>1</difficult>" in text
    )


def test_yolo_reads_normalized_centre_and_image_size(tmp_path: Path) -> None:
    (tmp_path / "img" / "sub").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "img" / "sub" / "a.jpg"), np.zeros((50, 100, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "img" / "b.png"), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "lbl" / "sub").mkdir(parents=True)
    (tmp_path / "lbl" / "sub" / "a.txt").write_text("1 0.5 0.5 0.5 0.5\n\n")
    coco = formats.yolo_to_coco(tmp_path / "img", tmp_path / "lbl", ["a", "b"])
    assert [im["file_name"] for im in coco["images"]] == ["b.png", "sub/a.jpg"]
    assert coco["images"][1]["width"] == 100 and coco["images"][1]["height"] == 50
    (ann,) = coco["annotations"]  # b.png has no label file: a negative
    assert ann["bbox"] == [25.0, 12.5, 50.0, 25.0] and ann["category_id"] == 2


def test_bad_inputs_name_file_record_and_field(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((10, 10, 3), np.uint8))
    (tmp_path / "xml").mkdir()
    (tmp_path / "xml" / "a.xml").write_text(
        "<annotation><filename>a.png</filename><object><name>hole</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>"
    )
    with pytest.raises(InvalidInputError) as err:
        formats.voc_to_coco(tmp_path / "img", tmp_path / "xml", ["dent"])
    assert (
        err.value.file.endswith("a.xml")
        and err.value.record == "object[0]"
        and err.value.field == "name"
    )

    (tmp_path / "lbl").mkdir()
    (tmp_path / "lbl" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(InvalidInputError) as err:
        formats.yolo_to_coco(tmp_path / "img", tmp_path / "lbl", ["dent"])
    assert err.value.record == "line 2" and err.value.field == "class"
    (tmp_path / "lbl" / "a.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(InvalidInputError, match="expected 5 fields"):
        formats.yolo_to_coco(tmp_path / "img", tmp_path / "lbl", ["dent"])

    (tmp_path / "classes.txt").write_text("a\n\nb\na\n")
    with pytest.raises(InvalidInputError, match="duplicate"):
        formats.read_classes(tmp_path / "classes.txt")


def test_cli_convert_both_directions(
    tmp_path: Path, dataset: tuple[Path, dict], capsys: pytest.CaptureFixture[str]
) -> None:
    images, coco = dataset
    gt = formats.save_coco(coco, tmp_path / "gt.json")
    for fmt in ("voc", "yolo"):
        out = tmp_path / fmt
        args = ["convert", "--from", "coco", "--to", fmt, "--images", str(images)]
        assert data_main([*args, "--annotations", str(gt), "--out", str(out)]) == 0
        classes = tmp_path / "classes.txt"
        classes.write_text("scratch\nspot\ncrack\ndent\n")
        back = tmp_path / f"{fmt}.json"
        args = [
            "convert",
            "--from",
            fmt,
            "--to",
            "coco",
            "--images",
            str(images),
            "--annotations",
            str(out),
        ]
        assert data_main([*args, "--classes", str(classes), "--out", str(back)]) == 0
        _assert_same_boxes(coco, json.loads(back.read_text()), tol=1e-5)
    capsys.readouterr()
    # Missing class list: one line on stderr, exit 2, no traceback.
    args = [
        "convert",
        "--from",
        "yolo",
        "--to",
        "coco",
        "--images",
        str(images),
        "--annotations",
        str(tmp_path),
    ]
    assert data_main([*args, "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "--classes" in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def one_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("one")
    cv2.imwrite(str(folder / "x.png"), np.zeros((37, 53, 3), np.uint8))
    return folder


_coord = st.floats(0.0, 1.0, allow_nan=False)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(boxes=st.lists(st.tuples(_coord, _coord, _coord, _coord, st.integers(0, 2)), max_size=6))
def test_round_trips_keep_arbitrary_boxes(one_image: Path, boxes: list, tmp_path_factory) -> None:
    """Any non-empty box inside the image, integral or not, survives COCO -> VOC/YOLO -> COCO."""
    annotations = []
    for i, (a, b, c, d, cls) in enumerate(boxes):
        x0, x1 = sorted((a * 53, c * 53))
        y0, y1 = sorted((b * 37, d * 37))
        if x1 - x0 < 1e-3 or y1 - y0 < 1e-3:
            continue  # an empty box is an error (see test_converters_refuse_bad_boxes)
        annotations.append(
            {"id": i + 1, "image_id": 1, "category_id": cls + 1, "bbox": [x0, y0, x1 - x0, y1 - y0]}
        )
    coco = {
        "images": [{"id": 1, "file_name": "x.png", "width": 53, "height": 37}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
    }
    out = tmp_path_factory.mktemp("rt")
    formats.coco_to_voc(coco, out / "voc")
    _assert_same_boxes(coco, formats.voc_to_coco(one_image, out / "voc", ["a", "b", "c"]), tol=1e-9)
    formats.coco_to_yolo(coco, out / "yolo")
    _assert_same_boxes(
        coco, formats.yolo_to_coco(one_image, out / "yolo", ["a", "b", "c"]), tol=1e-5
    )
