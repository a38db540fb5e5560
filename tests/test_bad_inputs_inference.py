"""Bad inputs to Detector.predict and `detection inspect`: a one-line error naming each, no hang,
no silent pass, and the good inputs of the same call or job still processed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from bad_images import within, write_bad_files
from PIL import Image
from square_model import build_square_model, make_meta, save_checkpoint, square_image

from detection.commands.common import EXIT_INPUT_ERRORS, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from detection.commands.inspect import main as inspect_main
from detection.core.errors import ImageReadError, InvalidInputError
from detection.inference.predictor import Detector
from detection.inspect.writer import error_files, iter_records, result_files

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py


def _good_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image, _ = square_image(rng, 64, 64, squares=i % 2)
        path = folder / f"good{i:03d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def detector(square_checkpoint: Path) -> Detector:
    return Detector.from_checkpoint(square_checkpoint, device="cpu")


GOOD = np.zeros((64, 64, 3), np.uint8)
BAD_ARRAYS = {
    "float 0..255 array": (np.full((64, 64, 3), 200.0, np.float32), "must lie in 0..1"),
    "float 0..255 tensor": (torch.full((3, 64, 64), 200.0), "must lie in 0..1"),
    "NaN tensor": (torch.full((3, 64, 64), float("nan")), "NaN"),
    "inf array": (np.full((64, 64), np.inf), "NaN or infinite"),
    "0x0 array": (np.zeros((0, 0, 3), np.uint8), "no pixels"),
    "empty tensor": (torch.zeros(3, 0, 64), "no pixels"),
    "int64 array": (np.zeros((64, 64, 3), np.int64), "unsupported pixel type int64"),
    "bool array": (np.zeros((64, 64), bool), "unsupported pixel type bool"),
    "int32 tensor": (torch.zeros(3, 64, 64, dtype=torch.int32), "unsupported tensor dtype"),
    "HWC tensor": (torch.zeros(64, 64, 3), "CHW"),
    "5 channels": (np.zeros((64, 64, 5), np.uint8), "HxWxC"),
    "PIL float 0..255": (Image.fromarray(np.full((8, 8), 99.0, np.float32), mode="F"), "0..1"),
}


@pytest.mark.parametrize("case", sorted(BAD_ARRAYS))
def test_predict_refuses_a_bad_array_naming_its_index(detector: Detector, case: str) -> None:
    bad, words = BAD_ARRAYS[case]
    with pytest.raises(ValueError) as info:
        detector.predict([GOOD, GOOD, bad])
    message = str(info.value)
    assert message.startswith("image #2: ") and words in message and "\n" not in message


def test_predict_tensors_refuses_floats_out_of_range(detector: Detector) -> None:
    with pytest.raises(InvalidInputError, match=r"^part-7: float pixels must lie in 0\.\.1"):
        detector.predict_tensors([torch.full((3, 64, 64), 255.0)], ["part-7"])


def test_predict_refuses_each_bad_file_naming_its_path(detector: Detector, tmp_path: Path) -> None:
    bad = write_bad_files(tmp_path)
    good = _good_images(tmp_path / "good", 1)
    for path, words in bad.items():
        with pytest.raises(ImageReadError) as info:
            within(10, lambda path=path: detector.predict([good[0], path]))
        message = str(info.value)
        assert message.startswith(f"{path}: ") and "\n" not in message
        assert any(word in message for word in words.split("|")), message
    assert len(detector.predict(good)) == 1  # the same detector still works


def test_pixel_limit_applies_to_arrays(square_checkpoint: Path) -> None:
    small = Detector.from_checkpoint(square_checkpoint, device="cpu", max_pixels=1000)
    with pytest.raises(ValueError, match=r"^image #0: image is 64x64 = 4096 pixels.*=1000"):
        small.predict(GOOD)
    assert small.predict(np.zeros((20, 30, 3), np.uint8))[0].width == 30


def _records(out: Path) -> tuple[list[dict], list[dict]]:
    results = [r for f in result_files(out) for r in iter_records(f)]
    errors = [r for f in error_files(out) for r in iter_records(f)]
    return results, errors


def test_inspect_reports_each_bad_file_and_inspects_the_good_ones(
    tmp_path: Path,
    square_checkpoint: Path,
) -> None:
    folder = tmp_path / "in"
    good = _good_images(folder, 3)
    bad = write_bad_files(folder)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(square_checkpoint), "--input", str(folder), "--output", str(out)]
    argv += ["--workers", "0", "--no-progress"]
    assert within(120, lambda: inspect_main(argv)) == EXIT_INPUT_ERRORS
    results, errors = _records(out)
    assert sorted(r["image"] for r in results) == good
    assert sorted(e["image"] for e in errors) == sorted(bad)
    for error in errors:
        words = bad[error["image"]].split("|")
        assert error["type"] == "ImageReadError" and any(w in error["error"] for w in words)

    # Fixed since: the re-run retries the errors; the fixed file leaves errors.jsonl.
    fixed = next(p for p, words in bad.items() if words == "empty")
    ok, jpeg = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    Path(fixed).write_bytes(jpeg.tobytes())
    assert within(120, lambda: inspect_main(argv)) == EXIT_INPUT_ERRORS
    results, errors = _records(out)
    assert sorted(r["image"] for r in results) == sorted([*good, fixed])
    assert sorted(e["image"] for e in errors) == sorted(set(bad) - {fixed})
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["duplicates"] == 0
    assert summary["errors"] == len(bad) - 1 and summary["this_run"]["images"] == len(bad)


def test_inspect_with_a_model_that_cannot_run_fails_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    meta = make_meta()
    meta.model_args["min_size"] = 0  # builds, but resizes every image to nothing
    checkpoint = save_checkpoint(build_square_model(), meta, tmp_path / "broken.ckpt")
    folder = tmp_path / "in"
    _good_images(folder, 2)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), "--input", str(folder), "--output", str(out)]
    assert inspect_main([*argv, "--workers", "0", "--no-progress"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"detection inspect: error: {checkpoint}: the model cannot run")
    assert "\n" not in err
    assert not error_files(out) and not result_files(out)  # no image was blamed


def test_sigterm_ends_inspect_like_ctrl_c_and_a_rerun_completes(
    tmp_path: Path,
    square_checkpoint: Path,
) -> None:
    folder = tmp_path / "in"
    good = _good_images(folder, 40, seed=5)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(square_checkpoint), "--input", str(folder), "--output", str(out)]
    argv += ["--batch-size", "1", "--workers", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "detection.cli", "inspect", *argv]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while sum(1 for f in result_files(out) for _ in iter_records(f)) < 2:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "no result lines after 120 s"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)  # to the job only, as `kill PID` does
        status = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    err = process.stderr.read().strip()
    assert status == EXIT_INTERRUPTED, err
    assert "run the same command to resume" in err and "Traceback" not in err
    done_before = sum(1 for f in result_files(out) for _ in iter_records(f))
    assert 2 <= done_before < len(good)
    assert inspect_main(argv) == EXIT_OK
    results, errors = _records(out)
    assert not errors and Counter(r["image"] for r in results) == Counter(good)
