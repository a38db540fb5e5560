"""Bad inputs and hostile conditions for `detection inspect`: garbled result lines, a full disk,
a killed job, odd file names, a garbled job.json, an unknown device, a tile far too small.

Each ends in a one-line error with exit status 2, or in a correct result that says what it did;
nothing is left behind (temporary files, processes) and every image is recorded exactly once.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from square_model import square_image

from detection.commands.common import EXIT_INPUT_ERRORS, EXIT_OK, EXIT_USAGE
from detection.commands.inspect import main
from detection.inference.tiling import check_tile, smallest_tile
from detection.inspect.records import error_problem, result_problem
from detection.inspect.writer import bad_lines, error_files, iter_records, result_files

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py


def write_images(folder: Path, count: int, seed: int = 0) -> list[str]:
    """`count` 64x64 PNGs, every other one with a bright square (a failed part)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image, _ = square_image(rng, 64, 64, squares=(i + 1) % 2)
        path = folder / f"img{i:03d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    return paths


def argv_for(checkpoint: Path, folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--checkpoint", str(checkpoint), "--input", str(folder), "--output", str(out),
        "--workers", "0", "--batch-size", "1", "--no-progress", *extra,
    ]  # fmt: skip


def records_of(out: Path) -> tuple[list[dict], list[dict]]:
    results = [r for f in result_files(out) for r in iter_records(f)]
    errors = [r for f in error_files(out) for r in iter_records(f)]
    return results, errors


def one_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("detection inspect: error: ") and "\n" not in err, err
    return err


def leftovers(out: Path) -> list[str]:
    """Temporary files under `out` (the rank locks `.lock-N` are meant to stay)."""
    return sorted(
        str(p.relative_to(out))
        for p in out.rglob(".*")
        if not p.name.startswith(".lock-") or p.stat().st_size
    )


def test_garbled_result_lines_are_reported_dropped_and_their_images_redone(
    tmp_path: Path, square_checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    images = write_images(folder, 6)
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    argv = argv_for(square_checkpoint, folder, out, "--shard-lines", "3")
    assert main(argv) == EXIT_INPUT_ERRORS
    first, second = result_files(out)
    # Garbage in the middle of one shard; a sound JSON line that lacks a field in the other; a
    # line of invalid UTF-8 before the error line.
    lines = first.read_bytes().splitlines(keepends=True)
    garbled_image = json.loads(lines[1])["image"]
    first.write_bytes(lines[0] + b'{"image": "x", garbage\n' + lines[2])
    lines = second.read_bytes().splitlines(keepends=True)
    record = json.loads(lines[1])
    del record["decision"]
    second.write_bytes(lines[0] + json.dumps(record).encode() + b"\n" + lines[2])
    errors = out / "errors.jsonl"
    errors.write_bytes(b"\xff\xfe not text\n" + errors.read_bytes())
    found = {(bad.path.name, bad.line) for bad in bad_lines(out)}
    assert found == {(first.name, 2), (second.name, 2), ("errors.jsonl", 1)}

    with caplog.at_level(logging.WARNING, logger="detection.inspect.rank"):
        assert main(argv) == EXIT_INPUT_ERRORS
    reported = [r.getMessage() for r in caplog.records if r.name == "detection.inspect.rank"]
    assert len(reported) == 3 and all("\n" not in m for m in reported)
    assert any(f"{first} line 2: not a JSON line" in m for m in reported)
    assert any(f"{second} line 2: field 'decision'" in m for m in reported)
    assert any(f"{errors} line 1: not a JSON line" in m for m in reported)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["bad_lines"] == 0
    assert summary["this_run"]["inspected"] == 2  # the garbled one and the one without a field
    assert summary["this_run"]["bad_lines_dropped"] == 3
    results, errors_now = records_of(out)
    assert Counter(r["image"] for r in results) == Counter(images)  # each exactly once
    assert garbled_image in images and record["image"] in images
    assert [e["image"] for e in errors_now] == [str(folder / "broken.png")]
    for path in [*result_files(out), *error_files(out)]:
        check = error_problem if path.name.startswith("errors") else result_problem
        assert all(check(json.loads(line)) is None for line in path.read_bytes().splitlines())


def test_a_bad_line_the_run_does_not_own_keeps_the_job_incomplete(
    tmp_path: Path, square_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in"
    write_images(folder, 2)
    out = tmp_path / "out"
    argv = argv_for(square_checkpoint, folder, out)
    assert main(argv) == EXIT_OK
    # A shard of rank 1 of a two-rank run: only that rank may rewrite it.
    (out / "results" / "part-00001-00000.jsonl").write_bytes(b"garbage\n")
    assert main(argv) == EXIT_OK
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bad_lines"] == 1 and not summary["complete"] and summary["missing"] == 0
    assert "1 lines of other ranks' result files are not sound" in capsys.readouterr().err


def test_a_full_disk_while_claiming_the_job_leaves_no_temporary_file(
    tmp_path: Path,
    square_checkpoint: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "in"
    write_images(folder, 1)
    out = tmp_path / "out"
    real_write = Path.write_text

    def full_disk(self: Path, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if self.name.startswith(".job.json"):
            self.touch()  # what a full disk leaves: the file, without its text
            raise OSError(28, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk)
    assert main(argv_for(square_checkpoint, folder, out)) == EXIT_USAGE
    err = one_line(capsys)
    assert "job.json" in err and "No space left on device" in err
    assert leftovers(out) == [] and not (out / "job.json").exists()


def test_save_images_on_a_full_disk_is_one_line_and_a_rerun_completes(
    tmp_path: Path, square_checkpoint: Path
) -> None:
    folder = tmp_path / "in"
    images = write_images(folder, 4)
    out = tmp_path / "out"
    argv = argv_for(square_checkpoint, folder, out, "--save-images")
    argv[argv.index("--workers") + 1] = "1"  # the drawing happens in a DataLoader worker

    def small_files() -> None:
        # Files up to 1500 bytes: job.json and result lines fit, a drawn JPEG does not. Python
        # ignores SIGXFSZ, so a write past the limit fails with EFBIG as a full disk fails.
        resource.setrlimit(resource.RLIMIT_FSIZE, (1500, resource.RLIM_INFINITY))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "detection.cli", "inspect", *argv]
    done = subprocess.run(
        command, env=env, preexec_fn=small_files, capture_output=True, text=True, timeout=300
    )
    err = done.stderr.strip()
    assert done.returncode == EXIT_USAGE, err
    assert err.startswith("detection inspect: error: ") and "\n" not in err, err
    assert f"{out / 'failed'}" in err and "File too large" in err
    assert leftovers(out) == []
    assert all(p.stat().st_size > 0 for p in (out / "failed").glob("*"))  # no partial image

    assert main(argv) == EXIT_OK  # room again: the job resumes and completes
    results, _ = records_of(out)
    assert Counter(r["image"] for r in results) == Counter(images)
    failed = [r for r in results if r["decision"] == "fail"]
    assert failed and len(list((out / "failed").glob("*.jpg"))) == len(failed)


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_after_sigkill_of_the_job_no_worker_outlives_it(
    tmp_path: Path, square_checkpoint: Path
) -> None:
    folder = tmp_path / "in"
    write_images(folder, 40)
    out = tmp_path / "out"
    argv = argv_for(square_checkpoint, folder, out)
    argv[argv.index("--workers") + 1] = "2"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "detection.cli", "inspect", *argv]
    job = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while sum(1 for f in result_files(out) for _ in iter_records(f)) < 2:
            assert job.poll() is None, job.stderr.read()
            assert time.monotonic() < deadline, "no result lines after 180 s"
            time.sleep(0.05)
        workers = [pid for pid in _children(job.pid) if _running(pid)]
        assert len(workers) >= 2, workers  # both DataLoader workers are running the model
        job.send_signal(signal.SIGKILL)  # the job only: it cannot stop its workers itself
        job.wait(timeout=30)
        # The kernel kills each worker when its parent dies; allow for a busy machine.
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _running(pid)], "a worker outlived the job"
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
        for pid in workers:  # only our own job's workers, should the test have failed
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_die_with_parent_ends_a_busy_child_when_its_parent_is_killed(tmp_path: Path) -> None:
    # A parent that starts a child which asks to die with it, then sleeps; the child sleeps
    # far longer than the test waits, as a worker busy with a batch would.
    script = (
        "import os, sys, time\n"
        "from detection.inspect.lifetime import die_with_parent\n"
        "parent = os.getpid()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    die_with_parent(parent)\n"
        "    time.sleep(600)\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        time.sleep(0.5)  # let the child make its request
        assert _running(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _running(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if _running(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'{"checkpoint": ', "not a job settings file (Expecting value"),
        (b"[1, 2]", "not a job settings file (not a JSON object)"),
        (b"\xff\xfe{}", "not a job settings file ("),
    ],
)
def test_a_garbled_job_json_is_one_line_naming_it(
    tmp_path: Path,
    square_checkpoint: Path,
    capsys: pytest.CaptureFixture,
    text: bytes,
    message: str,
) -> None:
    folder = tmp_path / "in"
    write_images(folder, 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "job.json").write_bytes(text)
    assert main(argv_for(square_checkpoint, folder, out)) == EXIT_USAGE
    err = one_line(capsys)
    assert f"{out / 'job.json'}: {message}" in err and "new --output folder" in err


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "mps", "meta"])
def test_an_unknown_device_is_one_line(
    tmp_path: Path, square_checkpoint: Path, capsys: pytest.CaptureFixture, device: str
) -> None:
    folder = tmp_path / "in"
    write_images(folder, 1)
    argv = argv_for(square_checkpoint, folder, tmp_path / "out", "--device", device)
    assert main(argv) == EXIT_USAGE
    assert f"device '{device}' is not one of auto, cpu, cuda or cuda:N" in one_line(capsys)


def test_a_file_name_that_is_not_utf8_is_an_error_line_and_the_rest_is_inspected(
    tmp_path: Path, square_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in"
    images = write_images(folder, 2)
    odd = os.fsencode(folder) + b"/caf\xe9.png"  # Latin-1, not UTF-8
    with open(odd, "wb") as f:
        f.write(Path(images[0]).read_bytes())
    (folder / "empty.png").write_bytes(b"")  # unreadable: an error, not "inspected"
    out = tmp_path / "out"
    assert main(argv_for(square_checkpoint, folder, out)) == EXIT_INPUT_ERRORS
    printed = capsys.readouterr().out
    assert "this run: 2 inspected, 2 unreadable" in printed
    results, errors = records_of(out)
    assert sorted(r["image"] for r in results) == images
    by_image = {e["image"]: e["error"] for e in errors}
    assert set(by_image) == {os.fsdecode(odd), str(folder / "empty.png")}
    assert (
        "not valid UTF-8" in by_image[os.fsdecode(odd)]
        and "caf\\xe9.png" in by_image[os.fsdecode(odd)]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["errors"] == 2
    assert summary["this_run"]["inspected"] == 2 and summary["this_run"]["errors"] == 2
    assert main(argv_for(square_checkpoint, folder, out)) == EXIT_INPUT_ERRORS  # resumes too


def test_a_tile_far_below_the_input_size_is_refused(
    tmp_path: Path, square_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "in"
    write_images(folder, 1)
    out = tmp_path / "out"
    assert main(argv_for(square_checkpoint, folder, out, "--tile", "8")) == EXIT_USAGE
    err = one_line(capsys)
    assert "tile 8 is far below the model's input size (64 px)" in err
    assert "at least 16 px" in err and not result_files(out)


def test_smallest_tile_is_a_quarter_of_the_input_size() -> None:
    assert smallest_tile({"min_size": 64}) == 16
    assert smallest_tile({"min_size": [480, 512, 800]}) == 200  # inference uses the last
    assert smallest_tile({}) == 200  # torchvision's default min_size, 800
    check_tile(None, {"min_size": 64})
    check_tile(16, {"min_size": 64})
    with pytest.raises(ValueError, match="tile 15 is far below"):
        check_tile(15, {"min_size": 64})
