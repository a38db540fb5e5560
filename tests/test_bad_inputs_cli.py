"""Bad input to `detection fit/validate/test`, export and data convert: a one-line error and
nothing else changed, and a run that dies after training started keeps its work (last.ckpt).

Every case asserts the exit status, one `error:` line naming the file, record and field, no
traceback, and that no checkpoint or output file appeared (or an existing one is untouched).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning.pytorch  # noqa: F401 - its log handler must bind pytest's stderr, not a test's capsys
import pytest
import torch
from cli_cases import error_line, fit_args, run
from coco_files import write_image
from square_model import build_square_model, make_meta, save_checkpoint

from detection.cli import main
from detection.core.errors import WeightsError
from detection.inference.predictor import Detector
from detection.models.checkpoint import open_checkpoint

REPO = Path(__file__).resolve().parents[1]


def checkpoints(root: Path) -> list[Path]:
    return sorted(root.rglob("*.ckpt")) if root.exists() else []


def image_record(data: Path, split: str, index: int) -> tuple[Path, dict[str, Any]]:
    """(image path, json record) of the index-th image of a split."""
    record = json.loads((data / "annotations" / f"{split}.json").read_text())["images"][index]
    return data / "images" / record["file_name"], record


def edit_json(data: Path, split: str, change: Any) -> None:
    path = data / "annotations" / f"{split}.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))


# ----------------------------------------------------------------------- fail before the work


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _missing(path: Path) -> None:
    path.unlink()


def _text(path: Path) -> None:
    path.write_text("not an image")


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _smaller(path: Path) -> None:
    write_image(path, width=32, height=32)


IMAGE_DEFECTS = {
    "fifo": (_fifo, "named pipe (FIFO)", "file_name"),
    "empty": (_empty, "empty", "file_name"),
    "missing": (_missing, "not found", "file_name"),
    "text": (_text, "image header", "file_name"),
    "directory": (_directory, "directory", "file_name"),
    "other size": (_smaller, "the json says 64x64 but the header", "width/height"),
}


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("defect", list(IMAGE_DEFECTS))
def test_fit_checks_every_image_before_the_first_step(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], split: str, defect: str
) -> None:
    breaks, problem, field = IMAGE_DEFECTS[defect]
    path, record = image_record(data, split, 0)
    breaks(path)
    root = tmp_path / "run"
    code, err = run(fit_args(data, root), capsys)
    assert code == 2
    error_line(err, f"{split}.json", f"image id {record['id']}", f"field '{field}'", problem)
    assert not checkpoints(root)


def test_the_check_counts_the_other_bad_images(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for index in (1, 3, 4):
        _empty(image_record(data, "train", index)[0])
    code, err = run(fit_args(data, tmp_path / "run"), capsys)
    first = image_record(data, "train", 1)[1]["id"]
    assert code == 2
    error_line(err, f"image id {first}", "(and 2 more images fail this check)")


@pytest.mark.parametrize("command, split", [("validate", "val"), ("test", "test")])
def test_validate_and_test_check_their_split(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, split: str
) -> None:
    path, record = image_record(data, split, 0)
    _fifo(path)
    code, err = run(fit_args(data, tmp_path / "run", command=command), capsys)
    assert code == 2
    error_line(err, f"{split}.json", f"image id {record['id']}", "named pipe (FIFO)")


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_split_without_images_is_refused(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], split: str
) -> None:
    edit_json(data, split, lambda coco: coco.update(images=[], annotations=[]))
    root = tmp_path / "run"
    code, err = run(fit_args(data, root), capsys)
    assert code == 2
    error_line(err, f"{split}.json", "field 'images'", "has no images")
    assert not checkpoints(root)


# ------------------------------------------------------------------------- keep the work


def test_a_run_that_dies_in_validation_keeps_a_resumable_last_ckpt(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # With the check off, a FIFO in the validation set fails the first validation (at step 2)
    # without hanging; the two steps trained are saved and resume.
    path, record = image_record(data, "val", 0)
    saved = path.read_bytes()
    _fifo(path)
    first = tmp_path / "first"
    code, err = run(fit_args(data, first, "--data.check_images=false"), capsys)
    assert code == 2
    line = error_line(err, f"image id {record['id']}", "named pipe (FIFO)", "--ckpt_path")
    last = Path(line.rsplit("--ckpt_path ", 1)[1])
    assert last.name == "last.ckpt" and last.exists()
    _, ckpt = open_checkpoint(last)
    assert ckpt["global_step"] == 2 and "optimizer_states" in ckpt

    path.unlink()
    path.write_bytes(saved)
    second = tmp_path / "second"
    # Without a logger too (the learning-rate monitor steps aside instead of refusing to start).
    args = fit_args(data, second, f"--ckpt_path={last}", "--trainer.max_steps=3",
                    "--trainer.logger=false")  # fmt: skip
    assert main(args) == 0
    resumed = next(p for p in checkpoints(second) if p.name == "last.ckpt")
    assert torch.load(resumed, weights_only=True)["global_step"] == 3


def trained(root: Path) -> bool:
    """Whether a run has logged a training step (metrics.csv: a header, then rows)."""
    metrics = list(root.glob("lightning_logs/version_*/metrics.csv"))
    return bool(metrics) and len(metrics[0].read_text().splitlines()) > 1


def test_sigterm_ends_fit_with_a_resumable_last_ckpt(data: Path, tmp_path: Path) -> None:
    root = tmp_path / "run"
    args = fit_args(data, root, "--trainer.max_steps=100000", "--trainer.val_check_interval=100000",
                    "--trainer.logger.flush_logs_every_n_steps=1")  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "detection.cli", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and process.poll() is None and not trained(root):
            time.sleep(0.2)
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err
    line = error_line(err, "stopped by SIGTERM", "--ckpt_path")
    last = Path(line.rsplit("--ckpt_path ", 1)[1])
    assert torch.load(last, weights_only=True)["global_step"] >= 1


# ------------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    "argument, field",
    [
        ("--model.lr=-0.01", "lr"),
        ("--model.lr=0", "lr"),
        ("--model.weight_decay=-1", "weight_decay"),
        ("--model.momentum=1.5", "momentum"),
        ("--model.warmup_iters=-5", "warmup_iters"),
        ("--model.warmup_factor=0", "warmup_factor"),
        ("--model.gamma=0", "gamma"),
        ("--model.milestones=[-1]", "milestones"),
        ("--model.min_size=[0]", "min_size"),
        ("--model.max_size=0", "max_size"),
        ("--model.iou_threshold=0", "iou_threshold"),
        ("--model.score_threshold=2", "score_threshold"),
        ("--data.batch_size=0", "batch_size"),
        ("--data.eval_batch_size=0", "batch_size"),
    ],
)
def test_impossible_numbers_are_one_line_errors(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argument: str, field: str
) -> None:
    root = tmp_path / "run"
    code, err = run(fit_args(data, root, argument), capsys)
    assert code == 2
    error_line(err, f"field '{field}'")
    assert not root.exists()


def _weights_only(path: Path) -> None:
    model, meta = build_square_model(), make_meta()
    save_checkpoint(model, meta, path)


def _pickled_list(path: Path) -> None:
    torch.save([1, 2, 3], path)


BAD_FILES = {
    "missing": (lambda path: None, "file not found"),
    "empty": (_empty, "file is empty (0 bytes)"),
    "text": (_text, "cannot load checkpoint safely"),
    "directory": (lambda path: path.mkdir(), "not a regular file"),
    "fifo": (lambda path: os.mkfifo(path), "not a regular file"),
    "list": (_pickled_list, "not a detection checkpoint"),
    "weights only": (_weights_only, "holds only weights"),
}


FILE_OPTIONS = [("--ckpt_path", kind) for kind in BAD_FILES] + [
    ("--model.weights", kind) for kind in ("missing", "empty", "text", "directory", "fifo")
]


@pytest.mark.parametrize("option, kind", FILE_OPTIONS)
def test_bad_checkpoint_or_weights_path_is_one_line_error(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, kind: str
) -> None:
    make, problem = BAD_FILES[kind]
    path = tmp_path / "given.ckpt"
    make(path)
    root = tmp_path / "run"
    code, err = run(fit_args(data, root, f"{option}={path}"), capsys)
    assert code == 2
    what = "checkpoint" if option == "--ckpt_path" else "weights"
    error_line(err, str(path), problem.replace("checkpoint", what))
    assert not checkpoints(root)


def test_ckpt_path_of_another_model_is_refused_by_test(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "square.ckpt"
    _weights_only(path)
    args = fit_args(data, tmp_path / "run", f"--ckpt_path={path}", command="test")
    code, err = run(args, capsys)
    assert code == 2
    error_line(err, str(path), "trained as fasterrcnn_resnet18_fpn on classes ['square']")


# ------------------------------------------------------------ checkpoints given to export


def _with_meta(change: Any) -> Any:
    def make(path: Path) -> None:
        save_checkpoint(build_square_model(), make_meta(), path)
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, path)

    return make


def _truncated(path: Path) -> None:
    save_checkpoint(build_square_model(), make_meta(), path)
    path.write_bytes(path.read_bytes()[:5000])


BAD_CHECKPOINTS = {
    "empty": (_empty, "checkpoint file is empty (0 bytes)"),
    "truncated": (_truncated, "truncated or corrupt"),
    "text": (_text, "cannot load checkpoint safely"),
    "fifo": (lambda path: os.mkfifo(path), "not a regular file"),
    "list": (_pickled_list, "not a detection checkpoint"),
    "meta not a dict": (_with_meta(lambda c: c.update(detection=[1])), "field 'detection'"),
    "meta key missing": (
        _with_meta(lambda c: c["detection"].pop("class_names")),
        "field 'detection.class_names': is missing",
    ),
    "meta wrong type": (
        _with_meta(lambda c: c["detection"].update(num_classes="one")),
        "field 'detection.num_classes': must be of type int",
    ),
    "meta wrong count": (
        _with_meta(lambda c: c["detection"].update(class_names=["a", "b"])),
        "field 'detection.class_names': must be 1 values",
    ),
    "meta unknown key": (
        _with_meta(lambda c: c["detection"].update(colour="red")),
        "unexpected keyword argument 'colour'",
    ),
    "state not a dict": (_with_meta(lambda c: c.update(state_dict=[1])), "field 'state_dict'"),
    "weights of another shape": (
        _with_meta(
            lambda c: c["detection"].update(
                num_classes=2, class_names=["a", "b"], category_ids=[1, 2]
            )
        ),  # fmt: skip
        "cannot rebuild fasterrcnn_resnet18_fpn",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_one_line_error_in_export_inspect_and_library(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    make, problem = BAD_CHECKPOINTS[kind]
    path = tmp_path / "model.ckpt"
    make(path)
    out = tmp_path / "model.pt"
    out.write_bytes(b"previous export")
    code = main(["export", "--checkpoint", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(path) in err and problem in err, err
    assert out.read_bytes() == b"previous export"
    with pytest.raises(WeightsError, match=re.escape(problem)):
        Detector.from_checkpoint(path)
    job, part = tmp_path / "job", write_image(tmp_path / "parts" / "part.png")
    code = main(["inspect", "--checkpoint", str(path), "--input", str(part.parent),
                 "--output", str(job)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and problem in err and len(err.strip().splitlines()) == 1, err
    assert not job.exists()


# ------------------------------------------------------------------------------ evaluate


EVALUATE_INPUTS = {
    "predictions not UTF-8": (
        "predictions",
        lambda path: path.write_bytes(b"\xff\xfe["),
        "cannot read",
    ),
    "predictions an object": (
        "predictions",
        lambda path: path.write_text('{"a": 1}'),
        "must be a list",
    ),
    "predictions a FIFO": ("predictions", lambda path: os.mkfifo(path), "not a regular file"),
    "ground truth a FIFO": ("gt", lambda path: os.mkfifo(path), "not a regular file"),
    "ground truth empty": ("gt", _empty, "malformed JSON"),
}


@pytest.mark.parametrize("kind", list(EVALUATE_INPUTS))
def test_evaluate_bad_files_are_one_line_errors(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    which, breaks, problem = EVALUATE_INPUTS[kind]
    files = {"gt": tmp_path / "gt.json", "predictions": tmp_path / "predictions.json"}
    shutil.copy(pristine / "annotations" / "val.json", files["gt"])
    files["predictions"].write_text("[]")
    files[which].unlink()
    breaks(files[which])
    out = tmp_path / "report"
    code = main(["evaluate", "--gt", str(files["gt"]), "--predictions",
                 str(files["predictions"]), "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(files[which]) in err and problem in err, err
    assert not out.exists()


# ------------------------------------------------------------------------ data convert


def test_convert_refuses_a_label_file_that_is_not_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "images" / "a.png")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_bytes(b"\xff\xfe0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "classes.txt").write_text("dent\n")
    out = tmp_path / "out.json"
    code = main(["data", "convert", "--from", "yolo", "--to", "coco", "--images",
                 str(tmp_path / "images"), "--annotations", str(tmp_path / "labels"),
                 "--classes", str(tmp_path / "classes.txt"), "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    error_line(err, "a.txt", "UTF-8")
    assert not out.exists()


def test_convert_coco_to_yolo_refuses_an_unknown_category(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coco = json.loads((pristine / "annotations" / "val.json").read_text())
    coco["annotations"][0]["category_id"] = 99
    source = tmp_path / "val.json"
    source.write_text(json.dumps(coco))
    out = tmp_path / "yolo"
    out.mkdir()
    (out / "classes.txt").write_text("previous\n")
    code = main(["data", "convert", "--from", "coco", "--to", "yolo", "--images",
                 str(pristine / "images"), "--annotations", str(source), "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    error_line(err, "val.json", "category_id", "99")
    assert [p.name for p in out.iterdir()] == ["classes.txt"]
    assert (out / "classes.txt").read_text() == "previous\n"
