"""Model files that cannot decide a part, bad inputs to `predict`, and exports that fail: each is
refused with one line naming the file (or input) and the field, and leaves no temporary file."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch  # noqa: F401 - its log handler must bind pytest's stderr, not a test's capsys
import numpy as np
import onnx
import pytest
import torch
from coco_files import write_image
from onnx import numpy_helper
from PIL import Image

from detection.cli import main
from detection.core.errors import ConfigError, OutputError, WeightsError
from detection.inference.export import export_model
from detection.inference.model_files import MODEL_FORMATS, load_model_file, read_model_meta
from detection.inference.predictor import Detector
from detection.models.faster_rcnn import build_model

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py


@pytest.fixture(scope="module")
def onnx_path(module_folder: Path, square_checkpoint: Path) -> Path:
    return export_model(square_checkpoint, module_folder / "model.onnx")


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _edited_checkpoint(source: Path, path: Path, edit: Callable[[dict], None]) -> Path:
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)
    return path


def _poison(value: float) -> Callable[[dict], None]:
    def edit(ckpt: dict) -> None:
        state = ckpt["state_dict"]
        state["model.roi_heads.box_predictor.cls_score.weight"][0, 0] = value

    return edit


def _thresholds(**stored: object) -> Callable[[dict], None]:
    def edit(ckpt: dict) -> None:
        ckpt["detection"].update(stored)

    return edit


BAD_CHECKPOINTS = {
    "NaN weights": (_poison(float("nan")), "roi_heads.box_predictor.cls_score.weight", "NaN"),
    "inf weights": (_poison(float("inf")), "roi_heads.box_predictor.cls_score.weight", "NaN"),
    "class threshold 2.0": (
        _thresholds(thresholds={"square": 2.0}),
        "detection.thresholds.square",
        "0..1",
    ),
    "default threshold -0.1": (
        _thresholds(score_threshold=-0.1),
        "detection.score_threshold",
        "0..1",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_a_checkpoint_that_cannot_decide_is_refused_everywhere(
    tmp_path: Path, square_checkpoint: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    edit, field, problem = BAD_CHECKPOINTS[kind]
    path = _edited_checkpoint(square_checkpoint, tmp_path / "model.ckpt", edit)
    expected = re.escape(f"{path}: field '{field}'") + ".*" + re.escape(problem)
    with pytest.raises(WeightsError, match=expected):
        Detector.from_checkpoint(path, device="cpu")
    with pytest.raises(WeightsError, match=expected):
        read_model_meta(path)  # what a multi-rank inspect and the CLI check read
    out = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(path), "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert re.search(expected, line), line
    assert not out.exists() and not list(tmp_path.glob(f".{out.name}*"))  # nor its temporary
    job, part = tmp_path / "job", write_image(tmp_path / "parts" / "part.png")
    code = main(["inspect", "--checkpoint", str(path), "--input", str(part.parent),
                 "--output", str(job), "--device", "cpu"])  # fmt: skip
    assert code == 2 and re.search(expected, _one_line(capsys.readouterr().err))
    assert not job.exists()


def _edited_onnx(source: Path, path: Path, edit: Callable[[onnx.ModelProto], None]) -> Path:
    graph = onnx.load(str(source))
    edit(graph)
    onnx.save(graph, str(path))
    return path


def _metadata(key: str, value: str) -> Callable[[onnx.ModelProto], None]:
    def edit(graph: onnx.ModelProto) -> None:
        entry = next(e for e in graph.metadata_props if e.key == key)
        entry.value = value

    return edit


def _checkpoint_thresholds(value: object) -> Callable[[onnx.ModelProto], None]:
    def edit(graph: onnx.ModelProto) -> None:
        entry = next(e for e in graph.metadata_props if e.key == "checkpoint")
        entry.value = json.dumps({**json.loads(entry.value), "thresholds": {"square": value}})

    return edit


def _nan_initializer(graph: onnx.ModelProto) -> None:
    initializer = next(i for i in graph.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
    array = numpy_helper.to_array(initializer).copy()
    array.flat[0] = np.nan
    initializer.CopyFrom(numpy_helper.from_array(array, initializer.name))


BAD_ONNX = {
    "NaN initializer": (_nan_initializer, "field '", "NaN"),
    "class threshold 5": (_metadata("thresholds", '{"square": 5}'), "thresholds.square", "0..1"),
    "stored class threshold 5": (_checkpoint_thresholds(5), "checkpoint.thresholds.square", "0..1"),
    "label threshold -1": (_metadata("label_thresholds", "[-1]"), "label_thresholds[0]", "0..1"),
    "garbled json": (_metadata("class_names", '["square"'), "class_names", "not valid JSON"),
}


@pytest.mark.parametrize("kind", list(BAD_ONNX))
def test_an_onnx_model_that_cannot_decide_is_refused(
    tmp_path: Path, onnx_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    edit, field, problem = BAD_ONNX[kind]
    path = _edited_onnx(onnx_path, tmp_path / "model.onnx", edit)
    with pytest.raises(WeightsError) as info:
        Detector.from_checkpoint(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: field '")
    assert field in message and problem in message, message
    job, part = tmp_path / "job", write_image(tmp_path / "parts" / "part.png")
    code = main(["inspect", "--checkpoint", str(path), "--input", str(part.parent),
                 "--output", str(job), "--device", "cpu"])  # fmt: skip
    line = _one_line(capsys.readouterr().err)
    assert code == 2 and str(path) in line and problem in line, line


@pytest.mark.parametrize("value", [1.5, -0.1, {"square": 2.0}, ["square=-1"]])
def test_library_thresholds_outside_0_1_are_refused(square_checkpoint: Path, value: object) -> None:
    with pytest.raises(ValueError, match="0..1"):
        Detector.from_checkpoint(square_checkpoint, device="cpu", thresholds=value)


@pytest.mark.parametrize("value", [1.5, -1.0, float("nan")])
def test_library_report_threshold_outside_0_1_is_refused(
    square_checkpoint: Path, value: float
) -> None:
    with pytest.raises(ValueError, match="report_threshold"):
        Detector.from_checkpoint(square_checkpoint, device="cpu", report_threshold=value)


@pytest.mark.parametrize("command", ["inspect", "export"])
@pytest.mark.parametrize("value", ["1.5", "-1", "nan", "high"])
def test_report_threshold_outside_0_1_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, value: str
) -> None:
    args = {
        "inspect": ["--input", str(tmp_path), "--output", str(tmp_path / "job")],
        "export": ["--out", str(tmp_path / "model.onnx")],
    }[command]
    with pytest.raises(SystemExit) as info:
        main([command, "--checkpoint", str(tmp_path / "m.ckpt"), *args,
              f"--report-threshold={value}"])  # fmt: skip
    assert info.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert "--report-threshold" in line and "0..1" in line, line


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def detector(square_checkpoint: Path) -> Detector:
    return Detector.from_checkpoint(square_checkpoint, device="cpu")


@pytest.mark.parametrize(
    "images, named",
    [
        (None, "images"),
        (5, "images"),
        (_png_bytes(), "images"),
        ([None], "image #0"),
        ([np.zeros((8, 8, 3), np.uint8), 2.5], "image #1"),
    ],  # fmt: skip
    ids=["None", "int", "png bytes", "list of None", "float in a list"],
)
def test_predict_of_something_not_an_image_names_it_and_what_is_accepted(
    detector: Detector, images: object, named: str
) -> None:
    with pytest.raises(ValueError) as info:
        detector.predict(images)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{named}: "), message
    assert "a file path, a numpy array, a PIL image or a CHW tensor" in message


def test_predict_of_a_meta_tensor_is_one_line(detector: Detector) -> None:
    meta = torch.empty(3, 8, 8, device="meta")
    for call in (detector.predict, detector.predict_tensors):
        with pytest.raises(ValueError, match=r"^image #0: tensor on the meta device") as info:
            call([meta])
        assert "\n" not in str(info.value)


def test_export_to_an_existing_folder_is_one_line_and_leaves_nothing(
    tmp_path: Path, square_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "deploy"
    folder.mkdir()
    for name in ("deploy", "deploy.onnx"):
        out = tmp_path / name
        out.mkdir(exist_ok=True)
        assert main(["export", "--checkpoint", str(square_checkpoint), "--out", str(out)]) == 2
        line = _one_line(capsys.readouterr().err)
        assert str(out) in line and "is a folder" in line, line
        assert out.is_dir() and not list(out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deploy", "deploy.onnx"]


@pytest.mark.parametrize("suffix", [".onnx", ".pt"])
def test_an_export_that_fills_the_disk_removes_its_temporary_file(
    tmp_path: Path,
    square_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    suffix: str,
) -> None:
    def full_disk(fd: int) -> None:  # the data written, the disk says at the flush: full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    out = tmp_path / f"model{suffix}"
    out.write_bytes(b"previous export")
    assert main(["export", "--checkpoint", str(square_checkpoint), "--out", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(out) in line and "No space left on device" in line, line
    assert out.read_bytes() == b"previous export"  # the deployed model is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no .tmp left
    with pytest.raises(OutputError):
        export_model(square_checkpoint, out)


def test_unknown_model_or_impl_is_a_configuration_error() -> None:
    for kwargs in ({"name": "yolo"}, {"impl": "fast"}, {"impl": "torchvision", "matrix_nms": True}):
        with pytest.raises(ConfigError) as info:
            build_model(**{"name": "fasterrcnn_resnet18_fpn", "num_classes": 1, **kwargs})
        assert not isinstance(info.value, WeightsError)


def test_every_model_format_loads_through_the_one_table(
    tmp_path: Path, square_checkpoint: Path, onnx_path: Path
) -> None:
    scripted = export_model(square_checkpoint, tmp_path / "model.pt")
    for path in (square_checkpoint, onnx_path, scripted):
        loaded = load_model_file(path)
        assert loaded.format == MODEL_FORMATS[path.suffix].name
        assert loaded.meta.class_names == ["square"] and read_model_meta(path) == loaded.meta
    exported = load_model_file(onnx_path)
    assert exported.report_threshold == 0.05 and exported.model.settings.min_score == 0.05


def test_an_export_cut_short_by_the_file_size_limit_leaves_no_temporary_file(
    tmp_path: Path, square_checkpoint: Path
) -> None:
    """A real failing write: RLIMIT_FSIZE makes the kernel refuse it (EFBIG), as a full disk
    refuses with ENOSPC; SIGXFSZ ignored so that the write fails instead of killing Python."""
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4_000_000, 4_000_000))\n"
        "from detection.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    out = tmp_path / "deploy" / "model.pt"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "export",
            "--checkpoint",
            str(square_checkpoint),
            "--out",
            str(out),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 2, done.stderr
    line = _one_line(done.stderr)
    assert str(out) in line and "cannot write" in line, line
    assert list(out.parent.iterdir()) == []  # neither the model nor its .tmp
