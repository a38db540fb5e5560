"""DeepPCB to COCO: official split sizes and box counts (skipped when the dataset is absent)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from detection.data.deeppcb import DEEPPCB_CLASSES, deeppcb_to_coco
from detection.data.lint import lint_coco

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO.parent / "shared" / "datasets" / "deeppcb"


def _script_main():
    spec = importlib.util.spec_from_file_location(
        "convert_deeppcb", REPO / "scripts" / "convert_deeppcb.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / "trainval.txt").is_file():
        pytest.skip(f"DeepPCB not found at {ROOT}")
    out = tmp_path_factory.mktemp("deeppcb")
    assert _script_main()(["--root", str(ROOT), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize(
    ("split", "images", "boxes"), [("trainval", 1000, 6873), ("test", 500, 3140)]
)
def test_official_split_counts(converted: Path, split: str, images: int, boxes: int) -> None:
    coco = json.loads((converted / f"{split}.json").read_text())
    assert len(coco["images"]) == images
    assert len(coco["annotations"]) == boxes
    assert [(c["id"], c["name"]) for c in coco["categories"]] == list(
        enumerate(DEEPPCB_CLASSES, start=1)
    )
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, 7))
    assert all(im["file_name"].endswith("_test.jpg") for im in coco["images"])
    assert {(im["width"], im["height"]) for im in coco["images"]} == {(640, 640)}


def test_splits_are_disjoint_and_match_the_library(converted: Path) -> None:
    trainval = json.loads((converted / "trainval.json").read_text())
    test = json.loads((converted / "test.json").read_text())
    assert not {im["file_name"] for im in trainval["images"]} & {
        im["file_name"] for im in test["images"]
    }
    assert deeppcb_to_coco(ROOT, "test") == test


def test_converted_test_split_passes_lint(converted: Path) -> None:
    # Headers of all 500 images: checks the paths, the sizes and that the boxes fit.
    result = lint_coco(converted / "test.json", ROOT)
    assert result.findings == []


def test_first_box_matches_the_label_file(converted: Path) -> None:
    coco = json.loads((converted / "trainval.json").read_text())
    image_rel, label_rel = (ROOT / "trainval.txt").read_text().split("\n")[0].split()
    assert coco["images"][0]["file_name"] == image_rel.replace(".jpg", "_test.jpg")
    x1, y1, x2, y2, kind = (
        int(v) for v in (ROOT / label_rel).read_text().replace(",", " ").split()[:5]
    )
    first = coco["annotations"][0]
    assert first["image_id"] == 1 and first["category_id"] == kind
    assert first["bbox"] == [x1, y1, x2 - x1, y2 - y1]


def test_comma_separated_labels_are_accepted(tmp_path: Path) -> None:
    group = tmp_path / "group1" / "1"
    group.mkdir(parents=True)
    (tmp_path / "group1" / "1_not").mkdir()
    (group / "1000_test.jpg").write_bytes(b"")  # existence is all the converter checks
    (tmp_path / "group1" / "1_not" / "1000.txt").write_text("10,20,30,45,6\n1 2 3 4 1\n")
    (tmp_path / "test.txt").write_text("group1/1/1000.jpg group1/1_not/1000.txt\n")
    coco = deeppcb_to_coco(tmp_path, "test")
    assert [a["bbox"] for a in coco["annotations"]] == [
        [10.0, 20.0, 20.0, 25.0],
        [1.0, 2.0, 2.0, 2.0],
    ]
    assert [a["category_id"] for a in coco["annotations"]] == [6, 1]
