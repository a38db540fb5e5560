"""The synthetic defect generator: deterministic, valid COCO, boxes tight around what is drawn."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from detection.commands.data import main as data_main
from detection.data.lint import lint_coco
from detection.data.synthetic import DEFAULT_CLASSES, generate_dataset, render_image


def _files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_identical_files(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "a", num_images=10, image_size=96, seed=3)
    generate_dataset(tmp_path / "b", num_images=10, image_size=96, seed=3)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert len(a) == 10 + 3
    assert a == b
    generate_dataset(tmp_path / "c", num_images=10, image_size=96, seed=4)
    assert _files(tmp_path / "c") != a


def test_layout_splits_and_categories(tmp_path: Path) -> None:
    paths = generate_dataset(
        tmp_path, num_images=20, image_size=128, seed=0, negative_fraction=0.25
    )
    assert list(paths) == ["train", "val", "test"]
    counts = {}
    for split, path in paths.items():
        assert path == tmp_path / "annotations" / f"{split}.json"
        coco = json.loads(path.read_text())
        counts[split] = len(coco["images"])
        assert [c["name"] for c in coco["categories"]] == list(DEFAULT_CLASSES)
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3, 4]
        for index, image in enumerate(coco["images"]):
            assert image["file_name"] == f"{split}/{split}_{index:05d}.png"
            assert (image["width"], image["height"]) == (128, 128)
            pixels = cv2.imread(str(tmp_path / "images" / image["file_name"]), cv2.IMREAD_UNCHANGED)
            assert pixels.shape == (128, 128, 3) and pixels.dtype == np.uint8
        with_boxes = {a["image_id"] for a in coco["annotations"]}
        assert len(coco["images"]) - len(with_boxes) == round(len(coco["images"]) * 0.25)
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert all(isinstance(v, float) for v in ann["bbox"])
            assert x >= 0 and y >= 0 and x + w <= 128 and y + h <= 128 and w > 0 and h > 0
            assert ann["area"] == w * h and ann["iscrowd"] == 0
    assert counts == {"train": 14, "val": 3, "test": 3}


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_generated_json_passes_lint(tmp_path: Path, split: str) -> None:
    paths = generate_dataset(tmp_path, num_images=24, image_size=128, seed=1)
    result = lint_coco(paths[split], tmp_path / "images", decode_images=True)
    assert result.errors == [] and result.ok
    # A small split may miss a class by chance; that is the only acceptable warning.
    assert {f.kind for f in result.warnings} <= {"unused-category"}
    assert result.num_images > 0
    if split == "train":
        assert result.findings == []


def test_boxes_are_tight_around_the_drawn_defect() -> None:
    """Drawing the same surface with and without defects: the difference must fill each box."""
    for seed in range(12):
        kinds = [DEFAULT_CLASSES[seed % 4]]
        clean, _ = render_image(
            np.random.default_rng(seed), 160, 120, [], min_defect_size=6, max_defect_size=60
        )
        dirty, boxes = render_image(
            np.random.default_rng(seed), 160, 120, kinds, min_defect_size=6, max_defect_size=60
        )
        assert len(boxes) == 1 and boxes[0][0] == kinds[0]
        x0, y0, x1, y1 = boxes[0][1]
        ys, xs = np.nonzero(np.abs(dirty.astype(int) - clean.astype(int)).max(axis=2) > 0)
        # Everything that changed is inside the box ...
        assert xs.min() >= x0 and ys.min() >= y0 and xs.max() < x1 and ys.max() < y1
        # ... and the change reaches the box edges (a dent's rim may fade by a pixel or two).
        assert (
            xs.min() - x0 <= 2
            and ys.min() - y0 <= 2
            and x1 - 1 - xs.max() <= 2
            and y1 - 1 - ys.max() <= 2
        )


def test_defect_sizes_span_the_requested_range(tmp_path: Path) -> None:
    paths = generate_dataset(tmp_path, num_images=60, image_size=200, seed=2, splits={"train": 1.0})
    coco = json.loads(paths["train"].read_text())
    longest = [max(a["bbox"][2], a["bbox"][3]) for a in coco["annotations"]]
    assert min(longest) < 20 and max(longest) > 60 and max(longest) <= 0.4 * 200 + 6
    assert {a["category_id"] for a in coco["annotations"]} == {1, 2, 3, 4}


def test_rectangular_size_and_class_subset(tmp_path: Path) -> None:
    paths = generate_dataset(
        tmp_path, num_images=4, image_size=(160, 96), classes=("dent", "spot"), splits={"all": 1.0}
    )
    coco = json.loads(paths["all"].read_text())
    assert {(im["width"], im["height"]) for im in coco["images"]} == {(160, 96)}
    assert coco["categories"][0]["name"] == "dent" and coco["categories"][1]["name"] == "spot"
    assert cv2.imread(str(tmp_path / "images" / "all" / "all_00000.png")).shape == (96, 160, 3)
    with pytest.raises(ValueError, match="subset"):
        generate_dataset(tmp_path, num_images=1, classes=("hole",))


def test_generation_is_fast(tmp_path: Path) -> None:
    start = time.perf_counter()
    generate_dataset(tmp_path, num_images=8, image_size=128)
    # The brief asks for well under a second; leave room for a busy shared machine.
    assert time.perf_counter() - start < 2.0


def test_cli_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    assert (
        data_main(["synth", "--out", str(out), "--images", "10", "--seed", "5", "--size", "64"])
        == 0
    )
    assert "train: 7 images" in capsys.readouterr().out
    assert json.loads((out / "annotations" / "val.json").read_text())["images"][0]["width"] == 64
