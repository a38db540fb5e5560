"""CVAT for images 1.1: the written XML read back by an independent reader (the standard
library's ElementTree for the document, cvat-sdk's API models for every shape: datumaro, the
other candidate, pins pillow 12 and opencv < 5 and would downgrade this environment), edits
imported as their diff kinds, and bad files refused with one line naming image and field."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cvat_sdk.api_client import models
from review_job import write_job

from detection.commands import review as review_command
from detection.review.manifest import read_manifest


@pytest.fixture()
def cvat_export(tmp_path: Path) -> dict:
    images = tmp_path / "lot"
    job = write_job(tmp_path / "job", images)
    out = tmp_path / "export"
    assert review_command.main(["export", "--inspect", str(job), "--out", str(out)]) == 0
    return {"tmp": tmp_path, "out": out, "xml": out / "cvat_annotations.xml"}


def test_cvat_reads_the_same_boxes_as_were_exported(cvat_export) -> None:
    manifest = read_manifest(cvat_export["out"])
    root = ET.parse(cvat_export["xml"]).getroot()
    assert root.findtext("version") == "1.1"
    label_ids = {
        name.text: i for i, name in enumerate(root.iterfind("./meta/task/labels/label/name"))
    }
    assert list(label_ids) == ["scratch", "spot"]
    for item, image in zip(manifest.images, root.iter("image"), strict=True):
        assert image.get("name") == Path(item.image).name
        assert (int(image.get("width")), int(image.get("height"))) == (item.width, item.height)
        shapes = [
            models.LabeledShapeRequest(
                type=models.ShapeType("rectangle"), frame=int(image.get("id")),
                label_id=label_ids[box.get("label")], source=box.get("source"),
                points=[float(box.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")],
                occluded=box.get("occluded") == "1", z_order=int(box.get("z_order")),
            )
            for box in image.iter("box")
        ]  # fmt: skip
        assert [s.source for s in shapes] == ["auto"] * len(item.boxes)
        names = {i: n for n, i in label_ids.items()}
        assert [(names[s.label_id], s.points) for s in shapes] == [
            (b.class_name, pytest.approx(list(b.bbox), abs=0.005)) for b in item.boxes
        ]


def _edit(path: Path) -> None:
    tree = ET.parse(path)
    images = {Path(i.get("name")).stem: i for i in tree.getroot().iter("image")}
    scratch, spot = images["a0"].findall("box")
    images["a0"].remove(spot)  # removed; the scratch stays as it is: confirmed
    (spot,) = images["a1"].findall("box")
    spot.set("label", "scratch")  # relabelled
    spot.set("source", "manual")
    (moved,) = images["a2"].findall("box")
    moved.set("xtl", "30.00")
    moved.set("xbr", "50.00")  # 10 px of 20: IoU 1/3, moved
    ET.SubElement(images["a1"], "box", label="spot", source="manual", occluded="0",
                  xtl="60", ytl="5", xbr="75", ybr="20", z_order="0")  # added  # fmt: skip
    tree.write(path)


def test_edits_in_the_cvat_xml_come_back_as_their_diff_kinds(cvat_export) -> None:
    _edit(cvat_export["xml"])
    out = cvat_export["tmp"] / "imported"
    code = review_command.main(
        [
            "import",
            str(cvat_export["xml"]),
            "--manifest",
            str(cvat_export["out"]),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "review_report.json").read_text())
    assert report["boxes"] == {
        "confirmed": 1,
        "moved": 1,
        "relabelled": 1,
        "removed": 1,
        "added": 1,
    }


def _set(path: Path, change) -> None:
    tree = ET.parse(path)
    change(tree.getroot())
    tree.write(path)


def _first_box(root: ET.Element) -> ET.Element:
    return next(root.iter("box"))


BAD = {
    "label": (lambda r: _first_box(r).set("label", "dent"), "image 0", "box[0].label", "class list"),
    "rotation": (lambda r: _first_box(r).set("rotation", "15"), "image 0", "box[0].rotation",
                 "rotated"),
    "polygon": (lambda r: ET.SubElement(next(r.iter("image")), "polygon", label="spot",
                                        points="1,1;5,1;5,5"), "image 0", "'polygon'", "not a box"),
    "name": (lambda r: next(r.iter("image")).set("name", "gone.png"), "image 0", "'name'",
             "not in the review export"),
    "duplicate": (lambda r: list(r.iter("image"))[1].set("id", "0"), "image 0", "'id'",
                  "duplicate"),
    "number": (lambda r: _first_box(r).set("xtl", "ten"), "image 0", "box[0].xtl", "number"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_cvat_file_is_one_line_naming_image_and_field(cvat_export, case, capsys) -> None:
    change, record, field, words = BAD[case]
    _set(cvat_export["xml"], change)
    out = cvat_export["tmp"] / "imported"
    code = review_command.main(
        [
            "import",
            str(cvat_export["xml"]),
            "--manifest",
            str(cvat_export["out"]),
            "--out",
            str(out),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and record in error and field in error, error
    assert words in error, error
    assert not out.exists()


def test_a_truncated_cvat_file_is_named_as_such(cvat_export, capsys) -> None:
    text = cvat_export["xml"].read_text()
    cvat_export["xml"].write_text(text[: len(text) // 2])
    code = review_command.main(["import", str(cvat_export["xml"]), "--manifest",
                                str(cvat_export["out"]), "--out", str(cvat_export["tmp"] / "o")])  # fmt: skip
    assert code == 2
    assert "truncated or malformed XML" in capsys.readouterr().err
