"""Converters validate every box with data lint's rules, report unmatched files, count truly."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detection.commands.data import main as data_main
from detection.core.coco_format import LINT_RULES, validate
from detection.core.errors import InvalidInputError
from detection.data import formats
from detection.data.box_policy import ConversionWarning

VOC = (
    "<annotation><filename>a.png</filename><size><width>40</width><height>30</height></size>"
    "<object><name>dent</name><bndbox>{}</bndbox></object></annotation>"
)


def _voc(tmp_path: Path, box: str) -> tuple[Path, Path]:
    """One 40x30 image and one XML with a single box given as its <bndbox> content."""
    (tmp_path / "img").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((30, 40, 3), np.uint8))
    (tmp_path / "xml").mkdir(exist_ok=True)
    (tmp_path / "xml" / "a.xml").write_text(VOC.format(box))
    return tmp_path / "img", tmp_path / "xml"


def _corners(xmin: object, ymin: object, xmax: object, ymax: object) -> str:
    values = {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}
    return "".join(f"<{k}>{v}</{k}>" for k, v in values.items() if v is not None)


def _yolo(tmp_path: Path, lines: str) -> tuple[Path, Path]:
    """One 40x30 image a.png and its label file."""
    (tmp_path / "img").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((30, 40, 3), np.uint8))
    (tmp_path / "lbl").mkdir(exist_ok=True)
    (tmp_path / "lbl" / "a.txt").write_text(lines)
    return tmp_path / "img", tmp_path / "lbl"


@pytest.mark.parametrize(
    ("corners", "field", "words"),
    [
        ((1, 1, None, 5), "bndbox", "4 finite numbers"),  # missing coordinate
        ((1, 1, "nan", 5), "bndbox", "4 finite numbers"),
        ((1, 1, "inf", 5), "bndbox", "4 finite numbers"),
        ((9, 1, 4, 5), "bndbox", "width and height must be > 0"),  # inverted
        ((1, 1, "x", 5), "bndbox/xmax", "not a number"),
    ],
)
def test_voc_bad_boxes_are_one_line_errors(
    tmp_path: Path, corners: tuple, field: str, words: str
) -> None:
    images, xml = _voc(tmp_path, _corners(*corners))
    with pytest.raises(InvalidInputError) as err:
        formats.voc_to_coco(images, xml, ["dent"])
    assert err.value.file.endswith("a.xml") and err.value.record == "object[0]"
    assert err.value.field == field
    assert words in str(err.value) and "\n" not in str(err.value)


def test_voc_inverted_box_has_lints_wording(tmp_path: Path) -> None:
    images, xml = _voc(tmp_path, _corners(9, 1, 4, 5))
    with pytest.raises(InvalidInputError) as err:
        formats.voc_to_coco(images, xml, ["dent"])
    # The same xywh box in a COCO file: data lint says the very same thing.
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 0, -4, 5]}],
        "categories": [{"id": 1, "name": "dent"}],
    }
    (finding,) = validate(coco, LINT_RULES)
    assert finding.kind == "degenerate-box" and err.value.problem == finding.message


def test_boxes_outside_the_image_are_clipped_and_counted_or_rejected(tmp_path: Path) -> None:
    images, xml = _voc(tmp_path, _corners(31, 21, 50, 40))  # reaches past 40x30
    with pytest.warns(ConversionWarning, match="clipped 1 boxes"):
        coco = formats.voc_to_coco(images, xml, ["dent"])
    assert coco["annotations"][0]["bbox"] == [30.0, 20.0, 10.0, 10.0]
    assert validate(coco, LINT_RULES) == []  # what is written passes lint
    with pytest.raises(InvalidInputError, match=r"exceeds its image of size 40x30.*rejected"):
        formats.voc_to_coco(images, xml, ["dent"], boxes="reject")
    images, xml = _voc(tmp_path, _corners(45, 1, 50, 5))  # nothing of it inside
    with pytest.raises(InvalidInputError, match="nothing of it is inside"):
        formats.voc_to_coco(images, xml, ["dent"])


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ("0 1.5 0.5 0.1 0.1", "cx", "must be in 0..1, got 1.5"),
        ("0 0.5 0.5 -0.1 0.1", "w", "must be in 0..1, got -0.1"),
        ("0 0.5 nan 0.1 0.1", "cy", "must be in 0..1, got nan"),
        ("0 0.5 0.5 0.0 0.1", "cx cy w h", "width and height must be > 0"),
    ],
)
def test_yolo_values_outside_0_1_are_errors(
    tmp_path: Path, line: str, field: str, words: str
) -> None:
    images, labels = _yolo(tmp_path, line + "\n")
    with pytest.raises(InvalidInputError) as err:
        formats.yolo_to_coco(images, labels, ["dent"])
    assert (err.value.record, err.value.field) == ("line 1", field)
    assert words in str(err.value)


def test_yolo_box_past_the_edge_is_clipped(tmp_path: Path) -> None:
    images, labels = _yolo(tmp_path, "0 0.95 0.5 0.2 0.2\n")
    with pytest.warns(ConversionWarning, match="clipped 1 boxes"):
        coco = formats.yolo_to_coco(images, labels, ["dent"])
    np.testing.assert_allclose(coco["annotations"][0]["bbox"], [34.0, 12.0, 6.0, 6.0])
    with pytest.raises(InvalidInputError, match="rejected"):
        formats.yolo_to_coco(images, labels, ["dent"], boxes="reject")


def test_unmatched_files_are_reported(tmp_path: Path) -> None:
    images, labels = _yolo(tmp_path, "0 0.5 0.5 0.2 0.2\n")
    (labels / "gone.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    cv2.imwrite(str(images / "b.png"), np.zeros((30, 40, 3), np.uint8))
    with pytest.warns(ConversionWarning) as caught:
        coco = formats.yolo_to_coco(images, labels, ["dent"])
    messages = [str(w.message) for w in caught]
    assert any("1 label files have no image" in m and "gone.txt" in m for m in messages)
    assert any("1 images have no label file" in m and "b.png" in m for m in messages)
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 1

    (tmp_path / "voc").mkdir()
    images, xml = _voc(tmp_path / "voc", _corners(1, 1, 5, 5))
    cv2.imwrite(str(images / "b.png"), np.zeros((30, 40, 3), np.uint8))
    with pytest.warns(ConversionWarning, match="1 images have no XML file"):
        formats.voc_to_coco(images, xml, ["dent"])


def test_coco_to_yolo_counts_what_it_writes_and_refuses_bad_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((30, 40, 3), np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 5]},  # past the edge
        ],
        "categories": [{"id": 1, "name": "dent"}],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(coco))
    argv = ["convert", "--from", "coco", "--to", "yolo", "--images", str(tmp_path)]
    assert data_main([*argv, "--annotations", str(path), "--out", str(tmp_path / "y")]) == 0
    out, err = capsys.readouterr()
    written = (tmp_path / "y" / "a.txt").read_text().splitlines()
    assert "1 yolo files, 2 boxes" in out and len(written) == 2
    assert "warning:" in err and "clipped 1 boxes" in err
    assert all(0.0 <= float(v) <= 1.0 for line in written for v in line.split()[1:])
    args = [*argv, "--annotations", str(path), "--out", str(tmp_path / "r"), "--boxes", "reject"]
    assert data_main(args) == 2
    assert capsys.readouterr().err.count("\n") == 1

    coco["annotations"][0]["category_id"] = 9  # an unknown category: one line, no traceback
    path.write_text(json.dumps(coco))
    assert data_main([*argv, "--annotations", str(path), "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "annotations[0] (id 1): field 'category_id'" in err
