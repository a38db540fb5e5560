"""Bad input to the data, demo and fit commands: only regular files are read (a FIFO never
hangs a run), nothing is changed without a counted warning, and every refusal is one line.

FIFO cases run in a thread or a subprocess with a timeout, so a regression fails the test
instead of hanging the suite. Full disks are real failing writes (RLIMIT_FSIZE in a
subprocess, SIGXFSZ ignored) or ENOSPC from a patched write. A read-only run folder is a real
chmod for other users; as root (who ignores chmod, and whose venv another user may not be able
to run) the file system's answer is patched in: EROFS from os.open.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import lightning.pytorch  # noqa: F401 - its log handler must bind pytest's stderr, not a test's capsys
import pytest
from bad_images import within
from cli_cases import error_line, fit_args, run
from coco_files import write_image

from detection.cli import main
from detection.core.errors import InvalidInputError, OutputError
from detection.core.files import check_regular_file, read_yaml
from detection.core.run_folder import write_atomic
from detection.data import formats
from detection.data.box_policy import ConversionWarning
from detection.data.coco import CocoDetection, read_categories
from detection.data.lint import lint_coco
from detection.evaluation.inputs import ResultsFormatWarning

REPO = Path(__file__).resolve().parents[1]
FIFO_WORDS = "is a named pipe (FIFO), not a regular file"
SECONDS = 60  # far more than any case needs; a blocked read never returns


def fifo(path: Path) -> Path:
    """Replace `path` (or create it) by a named pipe no one writes to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    os.mkfifo(path)
    return path


def cli(
    args: list[str], *, timeout: float = 180, file_size: int | None = None
) -> subprocess.CompletedProcess[str]:
    """`detection ARGS` in a subprocess that cannot hang the suite; `file_size` caps every file
    it writes (a full disk)."""

    def limits() -> None:
        if file_size is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the cap fails instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "detection.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limits,
        env=env,
    )


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


# ------------------------------------------------------------------ only regular files are read


def test_one_check_one_message(tmp_path: Path) -> None:
    assert check_regular_file(write_image(tmp_path / "a.png")) == tmp_path / "a.png"
    with pytest.raises(InvalidInputError, match=r"is a directory, not a regular file"):
        check_regular_file(tmp_path)
    with pytest.raises(InvalidInputError, match="file not found"):
        check_regular_file(tmp_path / "missing.json")
    with pytest.raises(InvalidInputError, match=r"null: is a character device"):
        check_regular_file(os.devnull)


def _yolo(tmp_path: Path, fifo_name: str) -> tuple[Path, Any]:
    """A YOLO folder pair whose `fifo_name` (an image or a label file) is a FIFO."""
    images, labels = tmp_path / "yolo_images", tmp_path / "yolo_labels"
    for name in ("a", "b"):
        write_image(images / f"{name}.png")
        (labels / f"{name}.txt").parent.mkdir(exist_ok=True)
        (labels / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    folder = images if fifo_name.endswith(".png") else labels
    path = fifo(folder / fifo_name)
    if fifo_name.endswith(".png"):
        (labels / "c.txt").write_text("0 0.5 0.5 0.2 0.2\n")  # the FIFO image has a label file
    return path, lambda: formats.yolo_to_coco(images, labels, ["dent"])


def _case(name: str, tmp_path: Path, pristine: Path) -> tuple[Path, Any]:
    """(the FIFO, a call that must refuse it) for one reader."""
    images = pristine / "images"
    if name.startswith("yolo"):
        return _yolo(tmp_path, "b.txt" if name == "yolo label" else "c.png")
    path = fifo(tmp_path / ("voc/a.xml" if name == "voc xml" else f"{name.replace(' ', '_')}"))
    calls = {
        "train json": lambda: CocoDetection(path, images),
        "json categories": lambda: read_categories(path),
        "lint json": lambda: lint_coco(path),
        "voc xml": lambda: formats.voc_to_coco(images, path.parent),
        "class list": lambda: formats.read_classes(path),
        "yaml": lambda: read_yaml(path),
    }
    return path, calls[name]


CASES = ["train json", "json categories", "lint json", "voc xml", "yolo label", "yolo image",
         "class list", "yaml"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_a_fifo_is_refused_before_it_is_opened(tmp_path: Path, pristine: Path, case: str) -> None:
    path, call = _case(case, tmp_path, pristine)
    with pytest.raises(InvalidInputError) as caught:
        within(SECONDS, call)
    # The same words everywhere, naming the FIFO itself (a YOLO image is not "label file has
    # no image", a YOLO label file does not make its image defect-free).
    assert str(path) in str(caught.value) and FIFO_WORDS in str(caught.value)


def test_lint_and_demo_refuse_a_fifo_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fifo(tmp_path / "x.json")
    code, err = within(SECONDS, lambda: run(["data", "lint", str(path)], capsys))
    assert code == 2
    error_line(err, str(path), FIFO_WORDS)
    recipe = fifo(tmp_path / "recipe.yaml")
    code, err = within(SECONDS, lambda: run(["demo", "--config", str(recipe)], capsys))
    assert code == 2
    error_line(err, str(recipe), FIFO_WORDS)


@pytest.mark.parametrize("which", ["--config", "train json"])
def test_fit_refuses_a_fifo(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    root = tmp_path / "run"
    if which == "--config":
        path = fifo(tmp_path / "extra.yaml")
        args = fit_args(data, root, f"--config={path}")
    else:
        path = fifo(data / "annotations" / "train.json")
        args = fit_args(data, root)
    # In a thread: both refusals come before Lightning sets up signals; a hang fails the test.
    code, err = within(SECONDS, lambda: run(args, capsys))
    assert code == 2
    error_line(err, str(path), FIFO_WORDS)
    assert not list(root.rglob("*.ckpt"))


# ------------------------------------------------------------ silent passes -> counted warnings


def test_voc_size_that_disagrees_with_its_image_is_counted_and_the_image_wins(
    tmp_path: Path,
) -> None:
    images, xml = tmp_path / "images", tmp_path / "xml"
    for name in ("a", "b", "c"):
        write_image(images / f"{name}.png", width=64, height=48)
        root = ET.fromstring(
            f"<annotation><filename>{name}.png</filename><size><width>64</width>"
            "<height>48</height></size><object><name>dent</name><bndbox><xmin>2</xmin>"
            "<ymin>2</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object></annotation>"
        )
        if name != "a":  # b and c declare another size than their image has
            root.find("size/width").text = "640"  # type: ignore[union-attr]
        xml.mkdir(exist_ok=True)
        ET.ElementTree(root).write(xml / f"{name}.xml")
    with pytest.warns(ConversionWarning, match=r"^2 XML files declare a <size>") as record:
        coco = formats.voc_to_coco(images, xml)
    message = next(str(w.message) for w in record if "<size>" in str(w.message))
    assert "b.xml says 640x48, b.png is 64x48" in message and "image's own size" in message
    assert {(im["width"], im["height"]) for im in coco["images"]} == {(64, 48)}


def _evaluate(tmp_path: Path, pristine: Path, boxes: str) -> tuple[int, list[str]]:
    gt = json.loads((pristine / "annotations" / "val.json").read_text())
    results = []
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        box = [x, y, x + w, y + h] if boxes == "xyxy" else [x, y, w, h]
        results.append({"image_id": ann["image_id"], "category_id": ann["category_id"],
                        "bbox": box, "score": 0.9})  # fmt: skip
    predictions = tmp_path / f"{boxes}.json"
    predictions.write_text(json.dumps(results))
    args = ["evaluate", "--gt", str(pristine / "annotations" / "val.json"),
            "--predictions", str(predictions), "--out", str(tmp_path / boxes)]  # fmt: skip
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        code = main(args)
    return code, [str(w.message) for w in record if w.category is ResultsFormatWarning]


def test_evaluate_warns_about_results_that_look_like_xyxy(tmp_path: Path, pristine: Path) -> None:
    code, messages = _evaluate(tmp_path, pristine, "xyxy")
    total = len(json.loads((pristine / "annotations" / "val.json").read_text())["annotations"])
    assert code == 0 and len(messages) == 1, messages
    assert f"of {total} boxes reach past their image's edge" in messages[0]
    assert "[x1, y1, x2, y2]" in messages[0]
    code, messages = _evaluate(tmp_path, pristine, "xywh")  # the same boxes as COCO wants them
    assert code == 0 and messages == []


# ------------------------------------------------------------- data synth / convert: one line


SYNTH_REFUSALS = {
    "no images": (["--images", "0"], "--images 0 leaves no image for train, val, test"),
    "too few for a test split": (["--images", "3"], "use at least 5"),
    "size 0": (["--size", "0"], "--size must be at least 6 pixels, got 0"),
    "negative fraction": (["--negative-fraction", "1.5"], "--negative-fraction must be in 0..1"),
    "max defects": (["--max-defects", "-1"], "--max-defects must be at least 1, got -1"),
}


@pytest.mark.parametrize("case", list(SYNTH_REFUSALS))
def test_synth_refuses_impossible_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    extra, words = SYNTH_REFUSALS[case]
    out = tmp_path / "out"
    code, err = run(["data", "synth", "--out", str(out), "--images", "8", *extra], capsys)
    assert code == 2
    error_line(err, words)
    assert not out.exists()


def test_synth_into_a_file_or_a_full_disk_is_one_line_and_leaves_no_temporary_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    code, err = run(["data", "synth", "--out", str(a_file), "--images", "8"], capsys)
    assert code == 2 and a_file.read_text() == "keep"
    error_line(err, str(a_file), "is a file")
    out = tmp_path / "full"
    # 64x64 PNGs are about 12 KB: the first image does not fit under a 4 KB cap.
    done = cli(["data", "synth", "--out", str(out), "--images", "8", "--size", "64"],
               file_size=4096)  # fmt: skip
    assert done.returncode == 2, done.stderr
    error_line(done.stderr, "cannot write (File too large)", "train_00000.png")
    assert not [p for p in out.rglob("*") if p.is_file()], files_under(out)


def test_an_atomic_write_on_a_full_disk_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "summary.json"
    path.write_text("old")

    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        self.write_bytes(b"half")  # a partial temporary, as a real full disk leaves
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(
        OutputError, match=r"summary.json: cannot write \(No space left on device\)"
    ):
        write_atomic(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and files_under(tmp_path) == ["summary.json"]


CONVERT_OUTS = {
    "coco json is a folder": ("yolo", "coco", "folder", "is a folder"),
    "yolo folder is a file": ("coco", "yolo", "file", "is a file"),
    "voc folder is a file": ("coco", "voc", "file", "is a file"),
    "json under a file": ("yolo", "coco", "under a file", "is a file, not a folder"),
}


@pytest.mark.parametrize("case", list(CONVERT_OUTS))
def test_convert_out_of_the_wrong_kind_is_one_line(
    pristine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    source, target, kind, words = CONVERT_OUTS[case]
    images = pristine / "images"
    labels = tmp_path / "labels"
    formats.coco_to_yolo(formats.load_coco(pristine / "annotations" / "val.json"), labels)
    out = tmp_path / "out"
    if kind == "folder":
        out.mkdir()
    else:
        out.write_text("keep")
    named = out / "x.json" if kind == "under a file" else out
    annotations = labels if source == "yolo" else pristine / "annotations" / "val.json"
    args = ["data", "convert", "--from", source, "--to", target, "--images", str(images),
            "--annotations", str(annotations), "--out", str(named)]  # fmt: skip
    if source == "yolo":
        args += ["--classes", str(labels / "classes.txt")]
    code, err = run(args, capsys)
    assert code == 2
    error_line(err, str(out), words)
    assert (
        out.is_dir() and not list(out.iterdir()) if kind == "folder" else out.read_text() == "keep"
    )


def test_lint_documents_its_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["data", "lint", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "exit status:" in out and "1  the file has errors" in out and "0  no errors" in out


# ------------------------------------------------------------------------------------ demo


def test_demo_out_a_file_and_malformed_config_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    code, err = run(["demo", "--out", str(a_file), "--images", "8", "--steps", "1"], capsys)
    assert code == 2 and a_file.read_text() == "keep"
    error_line(err, str(a_file), "is a file")
    bad = tmp_path / "recipe.yaml"
    bad.write_text("trainer: [unclosed\n")
    code, err = run(["demo", "--config", str(bad), "--print-config"], capsys)
    assert code == 2
    error_line(err, str(bad), "line 2 column 1", "malformed YAML")


# ------------------------------------------------------------------------------------- fit


@pytest.mark.parametrize(
    "argument, words",
    [
        ("--trainer.max_epochs=-5", "field 'trainer.max_epochs': must be -1 (no limit) or 0"),
        ("--trainer.max_steps=-2", "field 'trainer.max_steps'"),
        ("--model.min_size=[]", "field 'min_size': must be a size or a list of sizes"),
    ],
)
def test_fit_options_no_run_can_use_are_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argument: str, words: str
) -> None:
    root = tmp_path / "run"
    code, err = run(fit_args(data, root, argument), capsys)
    assert code == 2
    error_line(err, words)
    assert not root.exists()


def test_fit_refuses_a_malformed_config_in_one_line(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_steps: [2\n")
    code, err = run(fit_args(data, tmp_path / "run", "--config", str(bad)), capsys)
    assert code == 2
    error_line(err, str(bad), "malformed YAML")


def test_fit_into_a_run_folder_that_is_a_file(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "run"
    root.write_text("keep")
    code, err = run(fit_args(data, root), capsys)
    assert code == 2 and root.read_text() == "keep"
    error_line(err, str(root), "is a file, not a folder")


def test_fit_into_a_read_only_run_folder(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = tmp_path / "read_only"
    parent.mkdir()
    if os.geteuid() == 0:
        # Root ignores permissions (and the venv's python may lie where another user cannot
        # run it): the file system refuses instead, as a read-only mount does.
        real_open = os.open

        def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if str(path).startswith(str(parent)) and flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only)
        words = "cannot write (Read-only file system)"
    else:
        parent.chmod(0o555)
        words = "cannot write (Permission denied)"
    try:
        code, err = run(fit_args(data, parent / "run"), capsys)
    finally:
        parent.chmod(0o755)
    assert code == 2
    error_line(err, str(parent), words)
    assert files_under(parent) == []


def test_fit_on_a_full_disk_ends_in_one_line_and_leaves_no_temporary_file(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slow on purpose (~30 s): two real training steps, then the checkpoint cannot be written
    # (each file is capped at 1 MB); the failure checkpoint cannot be either, and says so.
    root, temp = tmp_path / "run", tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # where Lightning's own save stages its file
    done = cli(fit_args(data, root), file_size=1 << 20)
    assert done.returncode == 2, done.stderr
    line = error_line(done.stderr, "File too large")
    assert "the training state could not be saved" in line, line
    assert not [p for p in root.rglob("*") if p.suffix == ".ckpt" or p.name.startswith(".")]
    assert files_under(temp) == []


@pytest.mark.parametrize(
    "argument, field",
    [("--images=0", "synthetic.num_images"), ("--size=0", "synthetic.image_size"),
     ("--steps=0", "trainer.max_steps"), ("--epochs=0", "trainer.max_epochs")],
)  # fmt: skip
def test_demo_settings_no_run_can_finish_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argument: str, field: str
) -> None:
    out = tmp_path / "demo"
    code, err = run(["demo", "--out", str(out), argument], capsys)
    assert code == 2
    error_line(err, f"field '{field}'", "got 0")
    assert not out.exists()
