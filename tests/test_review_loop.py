"""The review loop (`detection demo --review`): the simulated reviewer, and the whole loop at a
tiny scale (wiring, counts and resuming; not accuracy).

The loop's fixture runs three short trainings (3 + 2 + 2 steps at 64 px, each with its
validation), an inspect job over 16 lot images and three test evaluations: one real pass through
every stage, which cannot be made smaller. It took 90-97 s on 2 cores shared with another
training (2026-12-03); the other tests reuse that run, and the re-run takes under a second.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from torchvision.ops import box_iou

from detection.cli import main
from detection.core.errors import DetectionError
from detection.data.lint import lint_coco
from detection.demo.review_loop import run_review_loop
from detection.demo.simulated_reviewer import KEEP_IOU, simulated_answers
from detection.review.diff import diff_image
from detection.review.label_studio import BOX_TYPE, make_task, pixel_box, read_export
from detection.review.manifest import Manifest, ModelBox, ReviewImage

TINY = {"images": 40, "image_size": 64, "epochs": 1, "finetune_steps": 2, "audit_fraction": 1.0}
TINY_ARGS = ["--images", "40", "--size", "64", "--epochs", "1", "--finetune-steps", "2",
             "--audit-fraction", "1", "--no-progress"]  # fmt: skip
CLASSES = {"scratch": 1, "spot": 2, "crack": 3}


def _manifest(image: Path, boxes: list[tuple[str, list[float]]]) -> Manifest:
    shown = tuple(
        ModelBox(f"m{i}", name, tuple(box), 0.9 - 0.1 * i, True)
        for i, (name, box) in enumerate(boxes)
    )
    item = ReviewImage(str(image), 100, 100, "fail", ("failed",), 0.5, shown)
    return Manifest(
        export_id="e1", model_version="m@0", classes=CLASSES,
        thresholds=dict.fromkeys(CLASSES, 0.5), band=dict.fromkeys(CLASSES, 0.1),
        lot={"images": 1, "passed": 0, "failed": 1},
        audit={"fraction": 0.0, "seed": 0, "sampled": 0}, images=[item],
    )  # fmt: skip


def test_the_simulated_reviewer_keeps_relabels_deletes_and_adds(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"")  # the import only checks the path; no pixels are read here
    shown = [
        ("scratch", [10, 10, 30, 30]),  # on a scratch: kept
        ("spot", [50, 50, 70, 70]),  # on a crack: relabelled
        ("spot", [80, 5, 95, 20]),  # a false alarm: deleted
        ("spot", [40, 80, 60, 100]),  # IoU 0.43 with a spot: deleted, the truth drawn
    ]
    truth = {
        str(image): [
            ("scratch", [11, 11, 30, 30]),
            ("crack", [50, 52, 70, 70]),
            ("scratch", [5, 40, 25, 70]),  # missed
            ("spot", [48, 80, 68, 100]),
        ]
    }
    manifest = _manifest(image, shown)
    task = make_task(manifest.images[0], manifest, "/data/local-files/?d=a.png")
    (answer,) = simulated_answers([task], truth, 100, 100)
    regions = {r["id"]: r for r in answer["annotations"][0]["result"]}
    assert regions["m0"]["value"][BOX_TYPE] == ["scratch"]
    assert regions["m1"]["value"][BOX_TYPE] == ["crack"]
    assert "m2" not in regions and "m3" not in regions
    drawn = [r for key, r in regions.items() if not key.startswith("m")]
    assert sorted((r["value"][BOX_TYPE][0], pixel_box(r["value"], 100, 100)) for r in drawn) == [
        ("scratch", pytest.approx((5, 40, 25, 70))),
        ("spot", pytest.approx((48, 80, 68, 100))),
    ]
    # Kept boxes keep the model's coordinates, as Label Studio keeps an accepted prediction.
    assert pixel_box(regions["m1"]["value"], 100, 100) == pytest.approx((50, 50, 70, 70))
    export = tmp_path / "export.json"
    export.write_text(json.dumps([answer]))
    (reviewed,) = read_export(export, manifest)
    counts = diff_image(manifest.images[0], reviewed).counts()
    assert dict(counts) == {"confirmed": 1, "relabelled": 1, "removed": 2, "added": 2}


@pytest.fixture(scope="module")
def loop_run(module_folder: Path) -> tuple[Path, str]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["demo", "--review", "--out", str(module_folder), *TINY_ARGS]) == 0
    return module_folder, printed.getvalue()


def _actions(tasks: list[dict], answers: list[dict]) -> dict[str, int]:
    """What the reviewer did, from its answers against the shown predictions, by result id."""
    done = {"confirmed": 0, "moved": 0, "relabelled": 0, "removed": 0, "added": 0}
    for task, answer in zip(tasks, answers, strict=True):
        shown = {r["id"]: r["value"][BOX_TYPE] for r in task["predictions"][0]["result"]}
        given = {r["id"]: r["value"][BOX_TYPE] for r in answer["annotations"][0]["result"]}
        for key, label in given.items():
            if key not in shown:
                done["added"] += 1
            else:
                done["confirmed" if shown[key] == label else "relabelled"] += 1
        done["removed"] += len(set(shown) - set(given))
    return done


def test_imported_diff_counts_equal_what_the_reviewer_did(loop_run: tuple[Path, str]) -> None:
    out, _ = loop_run
    tasks = json.loads((out / "export" / "label_studio_tasks.json").read_text())
    answers = json.loads((out / "reviewer_export.json").read_text())
    lot = json.loads((out / "data" / "annotations" / "lot.json").read_text())
    # audit_fraction 1: every lot image is reviewed, the passed ones as audit.
    images = out / "data" / "images"
    assert sorted(t["data"]["detection_image"] for t in tasks) == sorted(
        str(images / i["file_name"]) for i in lot["images"]
    )
    names = {c["id"]: c["name"] for c in lot["categories"]}
    truth: dict[str, list] = {str(images / i["file_name"]): [] for i in lot["images"]}
    path_of = {i["id"]: str(images / i["file_name"]) for i in lot["images"]}
    for a in lot["annotations"]:
        x, y, w, h = a["bbox"]
        truth[path_of[a["image_id"]]].append((names[a["category_id"]], [x, y, x + w, y + h]))
    for answer in answers:
        gt = truth[answer["data"]["detection_image"]]
        regions = answer["annotations"][0]["result"]
        assert len(regions) == len(gt)  # one answer box per ground-truth box
        for region in regions:
            (label,) = region["value"][BOX_TYPE]
            same = [box for name, box in gt if name == label]
            box = torch.tensor([pixel_box(region["value"], 64, 64)], dtype=torch.float64)
            assert same and box_iou(box, torch.tensor(same, dtype=torch.float64)).max() >= KEEP_IOU
    done = _actions(tasks, answers)
    assert done["confirmed"] + done["relabelled"] + done["added"] == len(lot["annotations"]) > 0
    report = json.loads((out / "import" / "review_report.json").read_text())
    assert report["boxes"] == done
    assert report["reviewed_images"] == len(lot["images"])
    diffs = [json.loads(line) for line in (out / "import" / "review_diff.jsonl").open()]
    by_image = {d["image"]: d["counts"] for d in diffs}
    for task, answer in zip(tasks, answers, strict=True):
        assert by_image[task["data"]["detection_image"]] == _actions([task], [answer])
    loop = json.loads((out / "review_loop.json").read_text())
    assert loop["reviewed"]["boxes"] == done and loop["reviewed"]["exported"] == len(tasks)


def test_the_merged_json_is_lint_clean_and_holds_train_and_lot(loop_run: tuple[Path, str]) -> None:
    out, _ = loop_run
    merged_path = out / "import" / "merged.json"
    result = lint_coco(merged_path, out / "data" / "images")
    assert result.ok, result
    merged = json.loads(merged_path.read_text())
    train = json.loads((out / "data" / "annotations" / "train.json").read_text())
    lot = json.loads((out / "data" / "annotations" / "lot.json").read_text())
    assert len(merged["images"]) == len(train["images"]) + len(lot["images"])
    assert len(merged["annotations"]) == len(train["annotations"]) + len(lot["annotations"])


def test_the_loop_reports_before_after_and_control(loop_run: tuple[Path, str]) -> None:
    out, printed = loop_run
    loop = json.loads((out / "review_loop.json").read_text())
    test = json.loads((out / "data" / "annotations" / "test.json").read_text())
    defective = len({a["image_id"] for a in test["annotations"]})
    defect_free = len(test["images"]) - defective
    assert defective > 0 and defect_free > 0
    for name in ("before", "after_review", "control_no_review"):
        figures = loop[name]
        assert 0.0 <= figures["mAP50"] <= 1.0
        assert figures["escapes"]["n"] == defective and figures["false_rejects"]["n"] == defect_free
        assert 0 <= figures["escapes"]["k"] <= defective
        assert 0 <= figures["false_rejects"]["k"] <= defect_free
    training = loop["training"]
    assert training["round1"]["global_step"] == training["round1_control"]["global_step"] == 2
    assert loop["images"] == {"train": 12, "lot": 16, "val": 6, "test": 6}
    text = (out / "review_loop.md").read_text()
    assert "fine-tuned with the review" in text and "control" in text and "Wilson" in text
    assert "mAP50" in printed and "fine-tuned with the review" in printed


def test_a_second_run_reuses_every_stage(loop_run: tuple[Path, str]) -> None:
    out, _ = loop_run
    stamps = {
        p: p.stat().st_mtime_ns
        for folder in ("round0", "round1", "round1_control", "inspect", "import", "export")
        for p in (out / folder).rglob("*")
        if p.is_file()
    }
    before = json.loads((out / "review_loop.json").read_text())
    lines: list[str] = []
    again = run_review_loop(out, **TINY, progress=False, log=lines.append)
    text = "\n".join(lines)
    assert text.count("reusing finished training") == 3, text
    assert "reusing the complete job" in text and "reusing 16 images reviewed" in text
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained or rewritten
    assert again == before


def test_other_arguments_in_the_same_folder_are_refused(loop_run: tuple[Path, str]) -> None:
    out, _ = loop_run
    with pytest.raises(DetectionError, match="finetune_steps"):
        run_review_loop(out, **{**TINY, "finetune_steps": 3}, progress=False, log=lambda _: None)


def test_options_of_the_plain_demo_are_refused_with_review(capsys: pytest.CaptureFixture) -> None:
    for argv, message in (
        (["--review", "--steps", "3"], "--steps does not go with --review"),
        (["--review", "--device", "cuda"], "--review runs on CPU"),
        (["--finetune-steps", "3"], "--finetune-steps goes with --review only"),
        (["--review", "--finetune-steps", "0"], "expected a whole number >= 1"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(["demo", *argv])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("detection demo: error: ") and message in err
        assert err.count("\n") == 1  # one line, no usage block or traceback
