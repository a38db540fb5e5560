"""Lint finds each kind of planted error, names its record and field, and sets the exit code."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from detection.commands.data import main as data_main
from detection.data.lint import KINDS, WARNING, lint_coco


def _valid() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1.0, 2.0, 10.0, 5.0],
                "area": 50.0,
                "iscrowd": 0,
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 2,
                "bbox": [0.0, 0.0, 40.0, 30.0],
                "area": 1200.0,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 1, "name": "spot"}, {"id": 2, "name": "dent"}],
    }


@pytest.fixture()
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), np.full((30, 40, 3), 128, np.uint8))
    return folder


def _lint(tmp_path: Path, images: Path, data: dict | str, **kwargs):
    path = tmp_path / "gt.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return lint_coco(path, images, **kwargs)


def test_valid_file_has_no_findings(tmp_path: Path, images: Path) -> None:
    result = _lint(tmp_path, images, _valid())
    assert result.findings == [] and result.ok
    assert (result.num_images, result.num_annotations, result.num_categories) == (2, 2, 2)


def _set(section: str, index: int, key: str, value: object) -> Callable[[dict], None]:
    def plant(data: dict) -> None:
        data[section][index][key] = value

    return plant


def _drop(section: str, index: int, key: str) -> Callable[[dict], None]:
    def plant(data: dict) -> None:
        del data[section][index][key]

    return plant


def _append(section: str, record: dict) -> Callable[[dict], None]:
    def plant(data: dict) -> None:
        data[section].append(record)

    return plant


# kind, how to plant it, the record and field the finding must name.
PLANTED = [
    ("missing-key", _drop("annotations", 0, "bbox"), "annotations[0] (id 1)", "bbox"),
    ("missing-key", lambda d: d.pop("categories"), "top level", "categories"),
    ("bad-value", _set("annotations", 1, "bbox", [0, 0, "3", 4]), "annotations[1] (id 2)", "bbox"),
    ("bad-value", _set("images", 0, "width", 0), "images[0] (id 1)", "width"),
    ("duplicate-id", _set("images", 1, "id", 1), "images[1] (id 1)", "id"),
    ("duplicate-id", _set("annotations", 1, "id", 1), "annotations[1] (id 1)", "id"),
    ("unknown-image", _set("annotations", 0, "image_id", 9), "annotations[0] (id 1)", "image_id"),
    (
        "unknown-category",
        _set("annotations", 0, "category_id", 7),
        "annotations[0] (id 1)",
        "category_id",
    ),
    (
        "degenerate-box",
        _set("annotations", 0, "bbox", [5.0, 5.0, 0.0, 3.0]),
        "annotations[0] (id 1)",
        "bbox",
    ),
    (
        "degenerate-box",
        _set("annotations", 0, "bbox", [5.0, 5.0, 3.0, -1.0]),
        "annotations[0] (id 1)",
        "bbox",
    ),
    (
        "box-outside-image",
        _set("annotations", 0, "bbox", [35.0, 5.0, 10.0, 3.0]),
        "annotations[0] (id 1)",
        "bbox",
    ),
    (
        "box-outside-image",
        _set("annotations", 1, "bbox", [-2.0, 0.0, 10.0, 3.0]),
        "annotations[1] (id 2)",
        "bbox",
    ),
    ("missing-image", _set("images", 0, "file_name", "nope.png"), "images[0] (id 1)", "file_name"),
    ("size-mismatch", _set("images", 1, "height", 31), "images[1] (id 2)", "width/height"),
    (
        "duplicate-file-name",
        _set("images", 1, "file_name", "a.png"),
        "images[1] (id 2)",
        "file_name",
    ),
    (
        "unused-category",
        _append("categories", {"id": 3, "name": "crack"}),
        "categories[2] (id 3)",
        "id",
    ),
]


@pytest.mark.parametrize(("kind", "plant", "record", "field"), PLANTED)
def test_finds_each_planted_error(
    tmp_path: Path, images: Path, kind: str, plant: Callable[[dict], None], record: str, field: str
) -> None:
    data = copy.deepcopy(_valid())
    plant(data)
    result = _lint(tmp_path, images, data)
    found = [f for f in result.findings if f.kind == kind]
    assert len(found) == 1, result.findings
    assert (found[0].record, found[0].field, found[0].severity) == (record, field, KINDS[kind])
    assert result.counts()[kind] == 1
    assert result.ok == (KINDS[kind] == WARNING)


def test_malformed_json(tmp_path: Path, images: Path) -> None:
    result = _lint(tmp_path, images, '{"images": [}')
    assert [f.kind for f in result.findings] == ["malformed-json"] and not result.ok
    assert result.findings[0].record == "line 1 column 13"
    assert _lint(tmp_path, images, "[1, 2]").findings[0].kind == "malformed-json"


def test_unreadable_images_header_and_full_decode(tmp_path: Path, images: Path) -> None:
    (images / "a.png").write_bytes(b"not an image at all")
    png = (images / "b.png").read_bytes()
    (images / "b.png").write_bytes(png[: len(png) // 2])  # header intact, pixels cut off
    quick = _lint(tmp_path, images, _valid())
    assert [(f.kind, f.record) for f in quick.findings] == [
        ("unreadable-image", "images[0] (id 1)")
    ]
    full = _lint(tmp_path, images, _valid(), decode_images=True)
    assert [(f.kind, f.record) for f in full.findings] == [
        ("unreadable-image", "images[0] (id 1)"),
        ("unreadable-image", "images[1] (id 2)"),
    ]


def test_every_kind_is_tested() -> None:
    planted = {kind for kind, *_ in PLANTED} | {"malformed-json", "unreadable-image"}
    assert planted == set(KINDS)  # severities are checked by their effect on result.ok above


def test_cli_exit_codes_and_counts(
    tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps(_valid()))
    assert data_main(["lint", str(gt), "--images", str(images)]) == 0
    assert "OK: 0 errors, 0 warnings" in capsys.readouterr().out

    data = _valid()
    data["categories"].append({"id": 3, "name": "crack"})
    gt.write_text(json.dumps(data))
    assert data_main(["lint", str(gt), "--images", str(images)]) == 0  # warnings do not fail
    assert "unused-category" in capsys.readouterr().out

    data["annotations"][0]["bbox"] = [38.0, 0.0, 5.0, 5.0]
    data["annotations"][1]["bbox"] = [0.0, 0.0, 0.0, 5.0]
    data["annotations"].append(
        {"id": 3, "image_id": 5, "category_id": 1, "bbox": [30.0, 1.0, 20.0, 1.0]}
    )
    gt.write_text(json.dumps(data))
    assert data_main(["lint", str(gt), "--images", str(images)]) == 1
    out = capsys.readouterr().out
    assert "error: box-outside-image: annotations[0] (id 1) field 'bbox'" in out
    assert "FAILED: 3 errors, 1 warnings" in out

    assert data_main(["lint", str(gt), "--images", str(images), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    # The box of the annotation on an unknown image cannot be checked against a size.
    assert report["counts"] == {
        "unknown-image": 1,
        "degenerate-box": 1,
        "box-outside-image": 1,
        "unused-category": 1,
    }
    assert report["ok"] is False and len(report["findings"]) == 4


def test_cli_missing_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert data_main(["lint", str(tmp_path / "absent.json")]) == 2
    err = capsys.readouterr().err
    assert "absent.json" in err and err.count("\n") == 1
