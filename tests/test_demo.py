"""`detection demo`: a tiny end-to-end run checks the wiring (not accuracy) and resuming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from detection.cli import main
from detection.evaluation.coco import METRIC_KEYS

TINY = ["--device", "cpu", "--images", "14", "--size", "64", "--epochs", "1", "--no-progress"]


@pytest.fixture(scope="module")
def demo_run(module_folder: Path) -> Path:
    assert main(["demo", "--out", str(module_folder), *TINY]) == 0
    return module_folder


def test_demo_writes_report_inspection_and_checkpoints(demo_run: Path) -> None:
    report = demo_run / "report"
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics) and len(METRIC_KEYS) == 12
    assert set(metrics["calibrated_thresholds"]) == {"scratch", "spot", "crack", "dent"}
    for plot in ("pr_curves.png", "f1_vs_threshold.png", "confusion_matrix.png"):
        assert (report / plot).stat().st_size > 0
    test_images = json.loads((demo_run / "data/annotations/test.json").read_text())["images"]
    examples = sorted((report / "examples").glob("*.png"))
    assert 0 < len(examples) <= len(test_images)
    summary = json.loads((demo_run / "inspection/summary.json").read_text())
    assert summary["images"] == summary["inputs"] == len(test_images)
    assert summary["complete"] and summary["errors"] == 0
    assert summary["passed"] + summary["failed"] == len(test_images)
    assert len(list((demo_run / "inspection/failed").glob("*.jpg"))) == summary["failed"]
    text = (report / "README.md").read_text()
    assert "fasterrcnn_resnet18_fpn" in text and "mAP50" in text
    figures = json.loads((report / "summary.json").read_text())
    assert figures["model"] == "fasterrcnn_resnet18_fpn" and figures["device"] == "cpu"
    assert set(figures["timings"]) == {"data", "train", "evaluate", "inspect", "report"}
    assert any(p.name.startswith("best-") for p in (demo_run / "checkpoints").glob("*.ckpt"))
    recipe = yaml.safe_load((demo_run / "recipe.yaml").read_text())
    assert recipe["model"]["min_size"] == 64 and recipe["synthetic"]["image_size"] == 64


def test_demo_rerun_reuses_data_and_training(demo_run: Path, capsys: pytest.CaptureFixture) -> None:
    checkpoints = {p.name: p.stat().st_mtime_ns for p in (demo_run / "checkpoints").glob("*")}
    images = {p: p.stat().st_mtime_ns for p in (demo_run / "data/images").rglob("*.png")}
    assert main(["demo", "--out", str(demo_run), *TINY]) == 0
    assert "reusing" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (demo_run / "checkpoints").glob("*")} == (
        checkpoints
    )
    assert {p: p.stat().st_mtime_ns for p in (demo_run / "data/images").rglob("*.png")} == images
    timings = json.loads((demo_run / "timings.json").read_text())
    assert timings["data"]["reused"] and timings["train"]["reused"]
    assert timings["train"]["wall_s"] > 0  # the first run's time is kept


def test_demo_resumes_unfinished_training_from_last_ckpt(
    demo_run: Path, capsys: pytest.CaptureFixture
) -> None:
    last = demo_run / "checkpoints" / "last.ckpt"
    step = torch.load(last, weights_only=True)["global_step"]
    (demo_run / "checkpoints" / "training.json").unlink()  # as if interrupted before the end
    assert main(["demo", "--out", str(demo_run), *TINY]) == 0
    assert f"resuming from {last}" in capsys.readouterr().out
    finished = json.loads((demo_run / "checkpoints" / "training.json").read_text())
    assert finished["global_step"] == step  # continued where it stopped, did not start over
    assert (demo_run / "checkpoints" / finished["best"]).is_file()


def test_demo_refuses_other_settings_in_the_same_folder(
    demo_run: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["demo", "--out", str(demo_run), *TINY[:-1], "--seed", "5"]) == 2
    assert "other settings" in capsys.readouterr().err


def test_print_config_shows_the_recipe(capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--device", "cpu", "--steps", "7", "--print-config"]) == 0
    recipe = yaml.safe_load(capsys.readouterr().out)
    assert recipe["trainer"]["max_steps"] == 7 and recipe["trainer"]["val_check_interval"] == 7
    assert recipe["model"]["model_name"] == "fasterrcnn_resnet18_fpn"


def test_threshold_option_has_the_inspect_syntax(capsys: pytest.CaptureFixture) -> None:
    argv = ["demo", "--device", "cpu", "--print-config", "--threshold", "0.7"]
    assert main([*argv, "--threshold", "spot=0.3"]) == 0
    recipe = yaml.safe_load(capsys.readouterr().out)
    assert recipe["inspect"]["thresholds"] == ["0.7", "spot=0.3"]
    assert main(["demo", "--device", "cpu", "--print-config", "--threshold", "7"]) == 2
    err = capsys.readouterr().err
    assert "--threshold '7'" in err and err.count("\n") == 1 and "Traceback" not in err
