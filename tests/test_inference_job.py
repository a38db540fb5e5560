"""`detection inspect`: outputs, bad files, agreement with Detector, SIGKILL + restart exactly-once."""

from __future__ import annotations

import csv
import json
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from killed_jobs import result_lines, run_until
from square_model import square_image

from detection.commands.common import EXIT_INPUT_ERRORS, EXIT_USAGE
from detection.commands.inspect import main
from detection.inference.predictor import Detector
from detection.inspect.job import FAILED_DIR, InspectConfig, failed_image_name, run_inspect
from detection.inspect.sources import shard_items
from detection.inspect.writer import error_file, error_files, iter_records, result_files

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py


def _write_png(path: Path, image: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return str(path)


def make_folder(root: Path, good: int, seed: int = 0) -> tuple[list[str], dict[str, str]]:
    """`good` 64x64 PNGs (every other one with a square) and bad files: (good paths, bad -> why)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(good):
        image, _ = square_image(rng, 64, 64, squares=i % 2)
        paths.append(_write_png(root / f"line{i % 3}" / f"img{i:03d}.png", image))
    bad = {}
    zero = root / "zero.jpg"
    zero.write_bytes(b"")
    bad[str(zero)] = "empty"
    ok, jpeg = cv2.imencode(".jpg", square_image(rng, 64, 64)[0])
    truncated = root / "line0" / "truncated.jpg"
    truncated.write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    bad[str(truncated)] = "truncated"
    garbage = root / "garbage.png"
    garbage.write_bytes(b"this is not an image at all" * 10)
    bad[str(garbage)] = "decode|header"
    (root / "readme.txt").write_text("not an input: no image extension")
    return paths, bad


def all_records(out: Path) -> tuple[list[dict], list[dict]]:
    results = [r for f in result_files(out) for r in iter_records(f)]
    errors = [r for f in error_files(out) for r in iter_records(f)]
    return results, errors


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory,
    square_checkpoint: Path,
) -> dict:
    """One complete job over a folder with good, bad and oversized images."""
    root = tmp_path_factory.mktemp("job")
    images, bad = make_folder(root / "in", good=10)
    big = _write_png(root / "in" / "big.png", np.zeros((300, 300, 3), np.uint8))
    bad[big] = "max_pixels"
    out = root / "out"
    argv = [
        "--checkpoint", str(square_checkpoint), "--input", str(root / "in"),
        "--output", str(out), "--batch-size", "4", "--workers", "1", "--max-pixels", "50000",
        "--save-images", "--coco-results", "--csv", "--no-progress", "--shard-lines", "4",
    ]  # fmt: skip
    status = main(argv)
    return {"status": status, "out": out, "images": images, "bad": bad, "argv": argv}


def test_bad_files_are_reported_and_skipped(finished: dict) -> None:
    assert finished["status"] == EXIT_INPUT_ERRORS
    results, errors = all_records(finished["out"])
    assert sorted(r["image"] for r in results) == sorted(finished["images"])
    assert sorted(e["image"] for e in errors) == sorted(finished["bad"])
    for error in errors:
        assert error["error"] and error["type"] == "ImageReadError"
        assert any(word in error["error"] for word in finished["bad"][error["image"]].split("|"))
    summary = json.loads((finished["out"] / "summary.json").read_text())
    assert summary["errors"] == len(finished["bad"]) and summary["complete"]
    assert summary["images"] == len(finished["images"]) + len(finished["bad"])
    assert summary["passed"] + summary["failed"] == len(finished["images"])
    assert summary["images_per_s"] > 0


def test_inspect_agrees_with_detector(finished: dict, square_checkpoint: Path) -> None:
    results, _ = all_records(finished["out"])
    by_image = {r["image"]: r for r in results}
    detector = Detector.from_checkpoint(square_checkpoint, device="cpu")
    predictions = detector.predict(finished["images"], batch_size=1)
    decisions = Counter()
    for prediction in predictions:
        record = by_image[prediction.image]
        decisions[record["decision"]] += 1
        assert record["decision"] == prediction.decision
        assert (record["width"], record["height"]) == (64, 64)
        assert len(record["detections"]) == len(prediction.scores)
        for det, box, score in zip(
            record["detections"], prediction.boxes, prediction.scores, strict=True
        ):
            np.testing.assert_allclose(det["bbox"], box, atol=0.02)
            assert det["score"] == pytest.approx(float(score), abs=1e-4)
            assert det["class_name"] == "square" and det["category_id"] == 7
            assert det["fail"] == (score >= 0.5)
    assert decisions["pass"] > 0 and decisions["fail"] > 0  # the test sees both decisions


def test_summary_coco_csv_and_drawn_images(finished: dict) -> None:
    out = finished["out"]
    results, _ = all_records(out)
    failed = [r for r in results if r["decision"] == "fail"]
    summary = json.loads((out / "summary.json").read_text())
    detections = sum(len(r["detections"]) for r in results)
    assert summary["failed"] == len(failed)
    assert summary["classes"]["square"]["failed_images"] == len(failed)
    assert summary["classes"]["square"]["detections"] == detections
    coco = json.loads((out / "coco_results.json").read_text())
    assert len(coco) == detections and {c["category_id"] for c in coco} <= {7}
    first = next(r for r in results if r["detections"])
    entry = next(c for c in coco if c["file_name"] == first["image"])
    x0, y0, x1, y1 = first["detections"][0]["bbox"]
    assert entry["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0], abs=0.011)
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == detections + sum(1 for r in results if not r["detections"])
    drawn = sorted(p.name for p in (out / FAILED_DIR).iterdir())
    assert drawn == sorted(failed_image_name(r["image"]) for r in failed)


def test_rerun_of_a_finished_job_only_retries_the_errors(finished: dict) -> None:
    before = [f.read_bytes() for f in result_files(finished["out"])]
    assert main(finished["argv"]) == EXIT_INPUT_ERRORS
    assert [f.read_bytes() for f in result_files(finished["out"])] == before
    _, errors = all_records(finished["out"])
    assert sorted(e["image"] for e in errors) == sorted(finished["bad"])  # once each, again
    summary = json.loads((finished["out"] / "summary.json").read_text())
    assert summary["this_run"]["images"] == len(finished["bad"]) and summary["complete"]


def test_restart_with_other_settings_is_refused(
    finished: dict, capsys: pytest.CaptureFixture
) -> None:
    assert main([*finished["argv"], "--tile", "32"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "other settings" in err and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--checkpoint", "missing.ckpt"], "not found"),
        (["--input", "no/such/folder"], "no such file or folder"),
        (["--threshold", "square=high"], "CLASS=0.5"),
    ],
)
def test_cli_errors_are_one_line(
    tmp_path: Path,
    square_checkpoint: Path,
    capsys: pytest.CaptureFixture,
    argv: list[str],
    message: str,
) -> None:
    _write_png(tmp_path / "in" / "a.png", np.zeros((8, 8, 3), np.uint8))
    base = {
        "--checkpoint": str(square_checkpoint),
        "--input": str(tmp_path / "in"),
        "--output": str(tmp_path / "out"),
    }
    base.update(dict(zip(argv[::2], argv[1::2], strict=True)))
    assert main([*(x for kv in base.items() for x in kv), "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_sigkill_at_any_point_then_restart_gives_each_image_once(
    tmp_path: Path,
    square_checkpoint: Path,
) -> None:
    images, bad = make_folder(tmp_path / "in", good=30, seed=1)
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "detection.cli", "inspect", "--checkpoint", str(square_checkpoint),
        "--input", str(tmp_path / "in"), "--output", str(out), "--batch-size", "2",
        "--workers", "1", "--shard-lines", "4", "--no-progress",
    ]  # fmt: skip
    log = open(tmp_path / "stderr.txt", "wb")  # noqa: SIM115 - closed below

    killed_at = []
    for lines in (1, 7, 15):
        if run_until(command, out, lines, log) is not None:
            break  # it finished before the kill: the restart below still has to be exact
        killed_at.append(result_lines(out))
        if lines == 7:
            # A kill can land inside a write; leave a torn line as such a kill would.
            newest = max((out / "results").glob("part-*.jsonl"))
            with open(newest, "ab") as f:
                f.write(b'{"image": "' + images[-1].encode() + b'", "width": 6')
    assert len(killed_at) >= 2, f"the job finished too early to be killed: {killed_at}"
    assert run_until(command, out, None, log) == EXIT_INPUT_ERRORS
    log.close()

    results, errors = all_records(out)
    counts = Counter(r["image"] for r in [*results, *errors])
    assert set(counts) == set(images) | set(bad)
    assert all(n == 1 for n in counts.values()), [k for k, n in counts.items() if n > 1]
    for f in [*result_files(out), *error_files(out)]:
        text = f.read_bytes()
        assert text.endswith(b"\n")
        assert all(json.loads(line) for line in text.splitlines())  # nothing torn left behind
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["duplicates"] == 0
    assert summary["images"] == len(images) + len(bad)


def test_two_ranks_split_the_inputs_and_each_image_is_done_once(
    tmp_path: Path,
    square_checkpoint: Path,
) -> None:
    images, bad = make_folder(tmp_path / "in", good=8, seed=2)
    out = tmp_path / "out"
    config = InspectConfig(
        checkpoint=str(square_checkpoint),
        inputs=[str(tmp_path / "in")],
        output=str(out),
        devices=2,  # two CPU processes here; one per GPU on a GPU machine
        device="cpu",
        workers=0,
        batch_size=4,
        progress=False,
    )
    summary = run_inspect(config)
    assert summary["complete"] and summary["images"] == len(images) + len(bad)
    assert {r["rank"] for r in summary["this_run"]["ranks"]} == {0, 1}
    inputs = sorted([*images, *bad])
    for rank in (0, 1):
        written = [
            r["image"]
            for f in [*(out / "results").glob(f"part-{rank:05d}-*.jsonl"), error_file(out, rank)]
            if f.exists()
            for r in iter_records(f)
        ]
        assert sorted(written) == shard_items(inputs, rank, 2)  # its own share, each once


def test_an_image_the_model_fails_on_becomes_an_error_line(
    tmp_path: Path,
    square_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    images, _ = make_folder(tmp_path / "in", good=4, seed=3)
    poisoned = images[1]
    detector = Detector.from_checkpoint(square_checkpoint, device="cpu")
    real = detector.predict_tensors

    def predict_tensors(tensors, names=None, batch_size=None):  # noqa: ANN001, ANN202
        if poisoned in (names or []):
            raise RuntimeError("shape mismatch in roi_heads")
        return real(tensors, names, batch_size)

    monkeypatch.setattr(detector, "predict_tensors", predict_tensors)
    config = InspectConfig(
        checkpoint=str(square_checkpoint),
        inputs=[*images],
        output=str(tmp_path / "out"),
        workers=0,
        batch_size=4,
        progress=False,
    )
    summary = run_inspect(config, detector=detector)
    results, errors = all_records(tmp_path / "out")
    assert sorted(r["image"] for r in results) == sorted(set(images) - {poisoned})
    assert [(e["image"], e["type"]) for e in errors] == [(poisoned, "InferenceError")]
    assert "shape mismatch" in errors[0]["error"] and summary["complete"]
