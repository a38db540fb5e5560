"""`detection evaluate`: table, metrics.json and PNG plots; one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from detection.cli import main as cli_main
from detection.commands.evaluate import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEYS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]

GT = {
    "images": [{"id": i, "width": 100, "height": 100} for i in (1, 2, 3)],
    "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [20, 20, 30, 30], "area": 900},
    ],
}
PREDICTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},
    {"image_id": 2, "category_id": 2, "bbox": [22, 20, 30, 30], "score": 0.4},
    {"image_id": 3, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.7},
]


@pytest.fixture
def files(tmp_path):
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(GT))
    pred.write_text(json.dumps(PREDICTIONS))
    return gt, pred


def test_writes_metrics_json_and_plots(files, tmp_path, capsys):
    gt, pred = files
    out = tmp_path / "out"
    argv = [
        "--gt",
        str(gt),
        "--predictions",
        str(pred),
        "--out",
        str(out),
        "--target-recall",
        "0.99",
    ]
    assert cli_main(["evaluate", *argv]) == 0
    printed = capsys.readouterr().out
    assert "COCO box metrics" in printed and "scratch" in printed and "escapes" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics)[:12] == KEYS
    assert metrics["AP50"] == pytest.approx(1.0)
    assert metrics["operating_point"]["iou_threshold"] == 0.5
    # At 0.5: the dent (0.4) is missed, image 3 (no defect) is falsely rejected.
    assert metrics["operating_point"]["per_class"]["dent"]["fn"] == 1
    assert metrics["image_level"]["escapes"] == 1
    assert metrics["image_level"]["false_rejects"] == 1
    assert metrics["calibrated_thresholds"] == {"scratch": 0.9, "dent": 0.4}
    for name in ("pr_curves.png", "f1_vs_threshold.png", "confusion_matrix.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000


def test_thresholds_file_area_ranges_and_backend(files, tmp_path):
    gt, pred = files
    first = tmp_path / "first"
    assert main(["--gt", str(gt), "--predictions", str(pred), "--out", str(first)]) == 0
    # A previous metrics.json supplies its calibrated thresholds.
    second = tmp_path / "second"
    argv = [
        "--gt",
        str(gt),
        "--predictions",
        str(pred),
        "--out",
        str(second),
        "--thresholds",
        str(first / "metrics.json"),
        "--backend",
        "pycocotools",
        "--area-ranges",
        '{"s": [0, 400], "m": [400, 1600], "l": [1600, 1e10]}',
        "--iou",
        "0.6",
    ]
    assert main(argv) == 0
    metrics = json.loads((second / "metrics.json").read_text())
    assert metrics["operating_point"]["score_threshold"] == {"scratch": 0.9, "dent": 0.4}
    assert metrics["operating_point"]["iou_threshold"] == 0.6
    assert metrics["image_level"]["escapes"] == 0
    assert metrics["settings"]["area_ranges"]["m"] == [400.0, 1600.0]
    assert (metrics["APs"], metrics["APm"], metrics["APl"]) == (
        pytest.approx(1.0),
        pytest.approx(0.8),
        -1.0,
    )


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda p: p[1].update(category_id=9),
            "pred.json: record 1: field 'category_id': unknown category id 9",
        ),
        (
            lambda p: p[2].update(image_id=42),
            "pred.json: record 2: field 'image_id': unknown image id 42",
        ),
        (
            lambda p: p[0].update(bbox=[0, 0, -3, 4]),
            "pred.json: record 0: field 'bbox': width and height must be >= 0",
        ),
        (lambda p: p[0].pop("score"), "pred.json: record 0: field 'score': missing"),
    ],
)
def test_bad_predictions_exit_2_with_one_line(files, tmp_path, capsys, edit, expected):
    gt, pred = files
    records = json.loads(pred.read_text())
    edit(records)
    pred.write_text(json.dumps(records))
    code = main(["--gt", str(gt), "--predictions", str(pred), "--out", str(tmp_path / "o")])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_nan_score_in_file_exits_2(files, tmp_path, capsys):
    gt, pred = files
    pred.write_text(json.dumps(PREDICTIONS).replace("0.7", "NaN"))
    assert main(["--gt", str(gt), "--predictions", str(pred), "--out", str(tmp_path / "o")]) == 2
    assert "record 2: field 'score': must be a finite number, got nan" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--area-ranges", "{oops"], "--area-ranges: neither a file nor valid JSON"),
        (["--area-ranges", '{"a": [0, 1]}'], "area_ranges must map exactly three names"),
        (["--iou", "1.5"], "iou_threshold must be in"),
        (["--thresholds", "missing.json"], "missing.json: file not found"),
    ],
)
def test_bad_options_exit_2(files, tmp_path, capsys, extra, expected):
    gt, pred = files
    argv = ["--gt", str(gt), "--predictions", str(pred), "--out", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_missing_gt_file_exits_2(files, tmp_path, capsys):
    _, pred = files
    argv = ["--gt", str(tmp_path / "nope.json"), "--predictions", str(pred), "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "nope.json: file not found" in capsys.readouterr().err
