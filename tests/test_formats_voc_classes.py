"""VOC -> COCO without a class list: the classes come from the XML files, sorted."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detection.commands.data import main as data_main
from detection.core.errors import InvalidInputError
from detection.data import formats


def _voc(root: Path, objects: dict[str, list[str]]) -> tuple[Path, Path]:
    """One 40x30 image and one XML per entry of `objects` (file stem -> object names)."""
    (root / "img").mkdir(parents=True)
    (root / "xml").mkdir()
    for stem, names in objects.items():
        cv2.imwrite(str(root / "img" / f"{stem}.png"), np.zeros((30, 40, 3), np.uint8))
        boxes = "".join(
            f"<object><name>{name}</name><bndbox><xmin>{2 + i}</xmin><ymin>2</ymin>"
            f"<xmax>{9 + i}</xmax><ymax>9</ymax></bndbox></object>"
            for i, name in enumerate(names)
        )
        (root / "xml" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.png</filename>{boxes}</annotation>"
        )
    return root / "img", root / "xml"


def test_classes_are_read_from_the_xml_files_sorted(tmp_path: Path) -> None:
    images, xml = _voc(tmp_path, {"a": ["scratch", "dent"], "b": ["spot", "dent"], "c": []})
    coco = formats.voc_to_coco(images, xml)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert names == {1: "dent", 2: "scratch", 3: "spot"}
    labels = [names[a["category_id"]] for a in coco["annotations"]]
    assert labels == ["scratch", "dent", "spot", "dent"]  # file order, then object order
    fixed = formats.voc_to_coco(images, xml, ["spot", "scratch", "dent"])  # a given order wins
    assert [c["name"] for c in fixed["categories"]] == ["spot", "scratch", "dent"]


def test_cli_prints_the_classes_and_writes_classes_txt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, xml = _voc(tmp_path, {"a": ["scratch"], "b": ["dent"]})
    out = tmp_path / "coco" / "train.json"
    args = ["convert", "--from", "voc", "--to", "coco", "--images", str(images)]
    assert data_main([*args, "--annotations", str(xml), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "dent, scratch" in printed and "--classes" in printed
    assert (tmp_path / "coco" / "classes.txt").read_text() == "dent\nscratch\n"
    assert [c["name"] for c in json.loads(out.read_text())["categories"]] == ["dent", "scratch"]
    # The written list converts another split with the same ids, even one lacking a class.
    other_images, other_xml = _voc(tmp_path / "val", {"c": ["scratch"]})
    val = tmp_path / "coco" / "val.json"
    classes = ["--classes", str(tmp_path / "coco" / "classes.txt")]
    argv = ["convert", "--from", "voc", "--to", "coco", "--images", str(other_images)]
    assert data_main([*argv, "--annotations", str(other_xml), *classes, "--out", str(val)]) == 0
    assert json.loads(val.read_text())["categories"] == json.loads(out.read_text())["categories"]


def test_xml_files_without_objects_need_a_class_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, xml = _voc(tmp_path, {"a": []})
    args = ["convert", "--from", "voc", "--to", "coco", "--images", str(images)]
    assert data_main([*args, "--annotations", str(xml), "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "--classes" in err and err.count("\n") == 1
    with pytest.raises(InvalidInputError, match="class '' is not in the class list"):
        _voc(tmp_path / "unnamed", {"a": [""]})
        formats.voc_to_coco(tmp_path / "unnamed" / "img", tmp_path / "unnamed" / "xml")
