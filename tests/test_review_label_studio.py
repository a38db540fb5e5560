"""The review loop against a real Label Studio server (tests/label_studio_server.py starts it):
`detection review export --url` creates the project and imports the tasks, the test acts as the
reviewer through the REST API, and `detection review import` reads the project's export back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from label_studio_server import LabelStudio, label_studio  # noqa: F401 - the fixture
from review_job import write_base, write_job

from detection.commands import review as review_command
from detection.data.lint import lint_coco
from detection.review.client import Client
from detection.review.manifest import read_manifest

TOKEN_ENV = "REVIEW_TEST_LABEL_STUDIO_TOKEN"


def _moved(region: dict[str, Any], dx_percent: float) -> dict[str, Any]:
    value = {**region["value"], "x": region["value"]["x"] + dx_percent}
    return {**region, "value": value}


def _relabelled(region: dict[str, Any], name: str) -> dict[str, Any]:
    return {**region, "value": {**region["value"], "rectanglelabels": [name]}}


NEW_BOX = {
    "id": "reviewer01", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
    "original_width": 80, "original_height": 60, "image_rotation": 0,
    "value": {"x": 70.0, "y": 5.0, "width": 15.0, "height": 20.0, "rotation": 0,
              "rectanglelabels": ["scratch"]},
}  # fmt: skip


@pytest.fixture(scope="module")
def reviewed_project(
    label_studio: LabelStudio,  # noqa: F811 - the imported fixture
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch_module: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """Export to the server, review as a person would, and fetch both export formats."""
    base = tmp_path_factory.mktemp("review_server")
    images = label_studio.document_root / "lot"
    job = write_job(base / "job", images)
    monkeypatch_module.setenv(TOKEN_ENV, label_studio.token)
    out = base / "export"
    code = review_command.main([
        "export", "--inspect", str(job), "--out", str(out), "--audit-fraction", "0.3",
        "--url", label_studio.url, "--project", "review test", "--token-env", TOKEN_ENV,
        "--document-root", str(label_studio.document_root),
    ])  # fmt: skip
    assert code == 0
    manifest = read_manifest(out)
    client = Client(label_studio.url, label_studio.token)
    tasks = {t["data"]["detection_image"]: t for t in client.tasks(manifest.project_id)}
    assert set(tasks) == {item.image for item in manifest.images}

    def prediction(stem: str) -> tuple[int, list[dict[str, Any]]]:
        task = tasks[str(images / f"{stem}.png")]
        (answer,) = client.request("GET", f"/api/predictions?task={task['id']}")
        return task["id"], answer["result"]

    def annotate(task_id: int, result: list[dict[str, Any]], cancelled: bool = False) -> None:
        body = {"result": result, "was_cancelled": cancelled}
        client.request("POST", f"/api/tasks/{task_id}/annotations", body)

    task, (scratch, spot) = prediction("a0")
    annotate(task, [scratch])  # the defect accepted as it is, the uncertain spot deleted
    task, (spot,) = prediction("a1")
    annotate(task, [_relabelled(spot, "scratch"), NEW_BOX])  # relabelled, and a missed defect
    task, (scratch,) = prediction("a2")
    annotate(task, [_moved(scratch, 12.5)])  # 10 px of a 20 px box: IoU 1/3
    audited = [i for i in manifest.images if i.reasons == ("audit",)]
    assert len(audited) == 2
    skipped_id = tasks[audited[0].image]["id"]
    annotate(skipped_id, [], cancelled=True)
    exports = {}
    for kind in ("JSON", "JSON_MIN"):
        path = base / f"export_{kind}.json"
        path.write_text(json.dumps(client.export(manifest.project_id, kind)), encoding="utf-8")
        exports[kind] = path
    base_json = write_base(base / "train.json", images)
    return {"base": base, "out": out, "exports": exports, "train": base_json, "images": images,
            "skipped": skipped_id, "manifest": manifest}  # fmt: skip


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _import(project: dict[str, Any], kind: str) -> tuple[dict[str, Any], Path]:
    out = project["base"] / f"import_{kind}"
    code = review_command.main([
        "import", str(project["exports"][kind]), "--manifest", str(project["out"]),
        "--out", str(out), "--base", str(project["train"]), "--images-root", str(project["images"]),
    ])  # fmt: skip
    assert code == 0
    return json.loads((out / "review_report.json").read_text()), out


EDITS = {"confirmed": 1, "moved": 1, "relabelled": 1, "removed": 1, "added": 1}


def test_every_edit_made_in_label_studio_comes_back_as_its_diff_kind(reviewed_project) -> None:
    report, out = _import(reviewed_project, "JSON")
    assert report["boxes"] == EDITS
    assert report["tasks"]["annotated"] == 3
    assert report["tasks"]["skipped"] == 1
    assert report["tasks"]["unannotated"] == 1
    assert report["reviewed_images"] == 3
    # a2 passed but the reviewer kept its (moved) scratch: an escape caught by the uncertain band.
    assert report["escapes_found"] == 1 and report["false_rejects"] == 0
    lines = [json.loads(line) for line in (out / "review_diff.jsonl").read_text().splitlines()]
    kinds = {Path(d["image"]).stem: sorted(b["kind"] for b in d["boxes"]) for d in lines}
    assert kinds == {"a0": ["confirmed", "removed"], "a1": ["added", "relabelled"], "a2": ["moved"]}


def test_the_merged_json_is_lint_clean_and_holds_the_corrections(reviewed_project) -> None:
    _, out = _import(reviewed_project, "JSON")
    result = lint_coco(out / "merged.json", reviewed_project["images"], decode_images=True)
    assert result.ok, [str(f) for f in result.errors]
    merged = json.loads((out / "merged.json").read_text())
    assert len(merged["images"]) == 1 + 3  # the training image plus the three answered tasks
    assert len(merged["annotations"]) == 1 + 4  # boxes kept: 1 + 2 + 1
    names = {c["id"]: c["name"] for c in merged["categories"]}
    new = [a for a in merged["annotations"] if a["id"] != 9]
    by_image = {i["id"]: i["file_name"] for i in merged["images"]}
    a1 = sorted(names[a["category_id"]] for a in new if by_image[a["image_id"]] == "a1.png")
    assert a1 == ["scratch", "scratch"]  # the relabelled spot and the added box
    ids = [a["id"] for a in merged["annotations"]]
    assert len(set(ids)) == len(ids)


def test_json_min_gives_the_same_diff_by_iou_pairing(reviewed_project) -> None:
    report, _ = _import(reviewed_project, "JSON_MIN")
    assert report["boxes"] == EDITS
    # JSON-MIN leaves cancelled tasks out: the skipped one counts as missing from the file.
    assert report["tasks"]["annotated"] == 3 and report["tasks"]["not_in_export_file"] == 1


def test_an_export_of_another_project_is_refused_naming_the_task(reviewed_project, capsys) -> None:
    data = json.loads(reviewed_project["exports"]["JSON"].read_text())
    data[0]["project"] = 999
    path = reviewed_project["base"] / "other_project.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    out = reviewed_project["base"] / "refused"
    code = review_command.main(
        ["import", str(path), "--manifest", str(reviewed_project["out"]), "--out", str(out)]
    )
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert f"task {data[0]['id']}" in error and "field 'project'" in error
    assert not out.exists()
