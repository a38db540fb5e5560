"""Review export and import without a server: selection rules, the task files, bad exports
(one line naming task and field, nothing written), the merge and the report's intervals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from review_job import DETECTIONS, write_base, write_job

from detection.commands import review as review_command
from detection.data.lint import lint_coco
from detection.review.label_studio import read_export
from detection.review.manifest import read_manifest
from detection.review.report import proportion
from detection.review.selection import select_images


@pytest.fixture()
def exported(tmp_path: Path) -> dict[str, Any]:
    images = tmp_path / "files" / "lot"
    job = write_job(tmp_path / "job", images)
    out = tmp_path / "export"
    code = review_command.main(
        ["export", "--inspect", str(job), "--out", str(out), "--audit-fraction", "0.3"]
    )
    assert code == 0
    tasks = json.loads((out / "label_studio_tasks.json").read_text())
    return {"tmp": tmp_path, "images": images, "out": out, "tasks": tasks}


def _records() -> list[dict[str, Any]]:
    return [
        {"image": k, "decision": "fail" if any(d["fail"] for d in v) else "pass", "detections": v}
        for k, v in DETECTIONS.items()
    ]


THRESHOLDS = {"scratch": 0.5, "spot": 0.5}
BAND = {"scratch": 0.1, "spot": 0.1}


def test_rules_combine_in_priority_order_and_the_limit_cuts_from_the_end() -> None:
    chosen = select_images(_records(), THRESHOLDS, BAND, ["uncertain", "failed"])
    # uncertain first, most uncertain first (a0's spot is 0.05 off, a2's scratch 0.08 off)
    assert [c.record["image"] for c in chosen] == ["a0", "a2", "a1"]
    assert chosen[0].reasons == ("uncertain", "failed") and chosen[0].uncertainty == 0.5
    limited = select_images(_records(), THRESHOLDS, BAND, ["failed", "uncertain"], limit=2)
    assert [c.record["image"] for c in limited] == ["a0", "a1"]


def test_the_audit_is_a_seeded_sample_of_passed_images_only() -> None:
    draws = [
        [c.record["image"] for c in select_images(_records(), THRESHOLDS, BAND, ["audit"],
                                                  audit_fraction=0.5, seed=s)]
        for s in (0, 0, 1, 2, 3)
    ]  # fmt: skip
    assert draws[0] == draws[1]
    passed = {k for k, v in DETECTIONS.items() if not any(d["fail"] for d in v)}
    assert all(len(d) == 4 and set(d) <= passed for d in draws)
    assert len({tuple(d) for d in draws}) > 1  # other seeds draw other samples


def test_disagree_needs_a_ground_truth_and_finds_decisions_it_contradicts() -> None:
    with pytest.raises(ValueError, match="ground truth"):
        select_images(_records(), THRESHOLDS, BAND, ["disagree"])
    truth = {"a0": True, "a1": False, "a2": True, "p0": False}
    chosen = select_images(_records(), THRESHOLDS, BAND, ["disagree"], defect_images=truth)
    assert sorted(c.record["image"] for c in chosen) == ["a1", "a2"]


def test_tasks_carry_percent_boxes_stable_ids_scores_and_the_model_version(exported) -> None:
    manifest = read_manifest(exported["out"])
    by_image = {t["data"]["detection_image"]: t for t in exported["tasks"]}
    a0 = by_image[str(exported["images"] / "a0.png")]
    (prediction,) = a0["predictions"]
    assert prediction["model_version"].startswith("best.ckpt@")
    assert prediction["score"] == 0.5
    scratch, spot = prediction["result"]
    assert scratch["value"]["x"] == pytest.approx(100 * 10 / 80)
    assert scratch["value"]["height"] == pytest.approx(100 * 20 / 60)
    assert (scratch["score"], spot["score"]) == (0.9, 0.45)
    assert a0["data"]["image"] == "/data/local-files/?d=a0.png"
    again = exported["tmp"] / "again"
    job = exported["tmp"] / "job"
    review_command.main(["export", "--inspect", str(job), "--out", str(again),
                         "--audit-fraction", "0.3"])  # fmt: skip
    assert read_manifest(again).to_dict() == manifest.to_dict()  # ids are stable
    config = (exported["out"] / "label_studio_config.xml").read_text()
    assert '<Label value="scratch"/>' in config and '<Label value="spot"/>' in config


def _answer(task: dict[str, Any], result: list[dict[str, Any]], task_id: int) -> dict[str, Any]:
    return {**task, "id": task_id, "annotations": [{"id": task_id, "result": result,
                                                    "was_cancelled": False}]}  # fmt: skip


def _export_file(exported, tasks: list[dict[str, Any]], name: str = "ls.json") -> Path:
    path = exported["tmp"] / name
    path.write_text(json.dumps(tasks), encoding="utf-8")
    return path


def _region(exported, **value: Any) -> dict[str, Any]:
    region = json.loads(json.dumps(exported["tasks"][0]["predictions"][0]["result"][0]))
    region["value"].update(value)
    return region


BAD_EXPORTS = {
    "label": (lambda e: [_answer(e["tasks"][0], [_region(e, rectanglelabels=["dent"])], 11)],
              "task 11", "value.rectanglelabels", "not in the class list"),
    "rotation": (lambda e: [_answer(e["tasks"][0], [_region(e, rotation=30)], 12)],
                 "task 12", "value.rotation", "rotated"),
    "polygon": (lambda e: [_answer(e["tasks"][0], [{**_region(e), "type": "polygonlabels"}], 13)],
                "task 13", "result[0].type", "polygon"),
    "other image": (lambda e: [_answer({**e["tasks"][0], "data": {**e["tasks"][0]["data"],
                     "detection_image": "elsewhere.png"}}, [], 14)],
                    "task 14", "data.detection_image", "not in the review export"),
    "duplicate": (lambda e: [_answer(e["tasks"][0], [], 15), _answer(e["tasks"][1], [], 15)],
                  "task 15", "'id'", "duplicate"),
    "other export": (lambda e: [_answer({**e["tasks"][0], "data": {**e["tasks"][0]["data"],
                      "detection_export": "0123"}}, [], 16)],
                     "task 16", "data.detection_export", "another project"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_EXPORTS))
def test_a_bad_export_is_one_line_naming_task_and_field_and_writes_nothing(
    exported, case: str, capsys
) -> None:
    make, record, field, words = BAD_EXPORTS[case]
    path = _export_file(exported, make(exported))
    out = exported["tmp"] / "imported"
    code = review_command.main(["import", str(path), "--manifest", str(exported["out"]),
                                "--out", str(out)])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert record in error and field in error and words in error, error
    assert not out.exists()


def test_a_truncated_export_is_named_as_such(exported, capsys) -> None:
    text = json.dumps([_answer(exported["tasks"][0], [], 1)])
    path = exported["tmp"] / "cut.json"
    path.write_text(text[: len(text) // 2], encoding="utf-8")
    code = review_command.main(["import", str(path), "--manifest", str(exported["out"]),
                                "--out", str(exported["tmp"] / "o")])  # fmt: skip
    assert code == 2
    assert "truncated file" in capsys.readouterr().err


def test_skipped_and_unanswered_tasks_are_counted_never_treated_as_no_defect(exported) -> None:
    tasks = exported["tasks"]
    answers = [
        {**tasks[0], "id": 1, "annotations": [{"id": 1, "result": [], "was_cancelled": True}]},
        {**tasks[1], "id": 2, "annotations": []},
        _answer(tasks[2], [], 3),  # answered: no defect
    ]
    manifest = read_manifest(exported["out"])
    statuses = [t.status for t in read_export(_export_file(exported, answers), manifest)]
    assert statuses == ["skipped", "unannotated", "annotated"]
    out = exported["tmp"] / "imported"
    review_command.main(["import", str(_export_file(exported, answers)), "--manifest",
                         str(exported["out"]), "--out", str(out)])  # fmt: skip
    corrected = json.loads((out / "corrected.json").read_text())
    assert len(corrected["images"]) == 1 and corrected["annotations"] == []


def _accept_all(exported) -> Path:
    return _export_file(
        exported,
        [_answer(t, t["predictions"][0]["result"], i + 1) for i, t in enumerate(exported["tasks"])],
    )


def test_an_image_reviewed_twice_is_refused_unless_the_latest_is_kept(exported, capsys) -> None:
    path = _accept_all(exported)
    train = write_base(exported["tmp"] / "train.json", exported["images"])
    first = exported["tmp"] / "first"
    args = [
        "import",
        str(path),
        "--manifest",
        str(exported["out"]),
        "--images-root",
        str(exported["images"]),
        "--base",
    ]
    assert review_command.main([*args, str(train), "--out", str(first)]) == 0
    merged = first / "merged.json"
    assert lint_coco(merged, exported["images"]).ok
    second = exported["tmp"] / "second"
    assert review_command.main([*args, str(merged), "--out", str(second)]) == 2
    assert "reviewed twice" in capsys.readouterr().err and not second.exists()
    assert review_command.main([*args, str(merged), "--out", str(second),
                                "--replace-reviewed"]) == 0  # fmt: skip
    again = json.loads((second / "merged.json").read_text())
    assert len(again["images"]) == len(json.loads(merged.read_text())["images"])
    assert lint_coco(second / "merged.json", exported["images"]).ok


def test_a_class_the_training_json_lacks_is_an_error_or_an_explicit_extension(
    exported, capsys
) -> None:
    path = _accept_all(exported)
    train = exported["tmp"] / "train.json"
    data = json.loads(write_base(train, exported["images"]).read_text())
    data["categories"] = [{"id": 5, "name": "spot"}]
    train.write_text(json.dumps(data), encoding="utf-8")
    args = [
        "import",
        str(path),
        "--manifest",
        str(exported["out"]),
        "--base",
        str(train),
        "--images-root",
        str(exported["images"]),
    ]
    assert review_command.main([*args, "--out", str(exported["tmp"] / "a")]) == 2
    assert "'scratch'" in capsys.readouterr().err
    assert review_command.main([*args, "--out", str(exported["tmp"] / "b"),
                                "--extend-classes"]) == 0  # fmt: skip
    merged = json.loads((exported["tmp"] / "b" / "merged.json").read_text())
    assert {c["name"] for c in merged["categories"]} == {"spot", "scratch"}


def test_intervals_are_wilson_and_contain_the_rate() -> None:
    p = proportion(3, 40)
    assert p["low"] < p["rate"] < p["high"] and p["rate"] == 0.075
    assert proportion(0, 20)["low"] == 0.0 and proportion(0, 20)["high"] > 0.1
    assert proportion(0, 0)["rate"] is None
