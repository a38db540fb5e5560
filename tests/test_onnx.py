"""ONNX export and the onnxruntime Detector: same detections and decisions as the checkpoint."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from square_model import square_image
from test_inference_job import all_records, make_folder

from detection.commands.common import EXIT_INPUT_ERRORS
from detection.commands.export import main as export_main
from detection.commands.inspect import main as inspect_main
from detection.core.errors import DetectionError
from detection.inference.onnx_model import OnnxModel
from detection.inference.predictor import Detector, Prediction
from detection.models.checkpoint import load_model
from detection.models.faster_rcnn import as_torchvision

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py


@pytest.fixture(scope="module")
def onnx_path(module_folder: Path, square_checkpoint: Path) -> Path:
    """The square detector exported by `detection export --out model.onnx`."""
    out = module_folder / "model.onnx"
    assert export_main(["--checkpoint", str(square_checkpoint), "--out", str(out)]) == 0
    return out


def _images() -> list[np.ndarray]:
    """Several sizes (smaller, larger, non-square), a gray image and one without squares."""
    rng = np.random.default_rng(11)
    sizes = [(72, 64, 1), (64, 64, 2), (150, 90, 2), (40, 52, 1), (96, 200, 1), (80, 80, 0)]
    images = [square_image(rng, w, h, squares=k)[0] for w, h, k in sizes]
    images.append(square_image(rng, 90, 70, squares=1)[0][:, :, 0])  # gray HxW
    return images


def assert_same(expected: list[Prediction], actual: list[Prediction]) -> None:
    """Boxes within 0.01 px, same labels, scores within 1e-4, same decision, same metadata."""
    for want, got in zip(expected, actual, strict=True):
        assert len(got.boxes) == len(want.boxes)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=0.01, rtol=0)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-4, rtol=0)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.defects, want.defects)
        assert got.passed == want.passed
        assert got.category_ids == want.category_ids and got.class_names == want.class_names
        assert (got.width, got.height) == (want.width, want.height)


def test_export_writes_opset_17_with_dynamic_size_and_metadata(onnx_path: Path) -> None:
    graph = onnx.load(str(onnx_path), load_external_data=False)
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) == 17
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 3 and dims[1].dim_param and dims[2].dim_param
    info = {p.key: json.loads(p.value) for p in graph.metadata_props}
    assert info["class_names"] == ["square"] and info["category_ids"] == [7]
    assert info["thresholds"] == {"square": 0.5} and info["label_thresholds"] == [0.5]
    assert info["report_threshold"] == 0.05 and info["min_score"] == 0.05


def eager_detector(checkpoint: Path, **settings: Any) -> Detector:
    """The checkpoint in torchvision's implementation, the model the ONNX graph is traced from."""
    model, meta = load_model(checkpoint)
    return Detector(as_torchvision(model), meta, **settings)


def test_onnx_detector_matches_the_checkpoint(onnx_path: Path, square_checkpoint: Path) -> None:
    eager = eager_detector(square_checkpoint, device="cpu")
    runtime = Detector.from_checkpoint(onnx_path, device="cpu")
    assert isinstance(runtime.model, OnnxModel)
    assert runtime.thresholds == eager.thresholds and runtime.class_names == ["square"]
    images = _images()
    # One image per model call, as the graph runs: a batch of mixed sizes is padded to its
    # largest, which moves torchvision's detections of the smaller images slightly.
    expected, actual = eager.predict(images, batch_size=1), runtime.predict(images)
    assert_same(expected, actual)
    decisions = Counter(p.decision for p in expected)
    assert decisions["pass"] and decisions["fail"]  # both outcomes compared
    assert any(len(p.boxes) == 0 for p in expected)  # and an image with no detections


def test_onnx_detector_thresholds_and_tiles_match(onnx_path: Path, square_checkpoint: Path) -> None:
    settings = {"device": "cpu", "thresholds": 0.3, "report_threshold": 0.2, "tile": 48}
    eager = eager_detector(square_checkpoint, **settings)
    runtime = Detector.from_checkpoint(onnx_path, **settings)
    images = _images()[:4]
    assert_same(eager.predict(images, batch_size=1), runtime.predict(images))


def test_a_threshold_below_the_exported_floor_is_refused(onnx_path: Path) -> None:
    with pytest.raises(DetectionError, match="--report-threshold 0.01"):
        Detector.from_checkpoint(onnx_path, device="cpu", report_threshold=0.01)


def test_missing_onnxruntime_names_the_extra(
    onnx_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    with pytest.raises(DetectionError, match=r'pip install "detection\[onnx\]"'):
        Detector.from_checkpoint(onnx_path, device="cpu")


def test_export_without_onnx_is_one_line_naming_the_extra(
    tmp_path: Path,
    square_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "model.onnx"
    assert export_main(["--checkpoint", str(square_checkpoint), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install "detection[onnx]"' in err and "\n" not in err and not out.exists()


def test_inspect_with_onnx_gives_the_checkpoint_decisions_once(
    tmp_path: Path,
    onnx_path: Path,
    square_checkpoint: Path,
) -> None:
    images, bad = make_folder(tmp_path / "in", good=6, seed=3)
    records = {}
    for name, model in (("ckpt", square_checkpoint), ("onnx", onnx_path)):
        argv = [
            "--checkpoint", str(model), "--input", str(tmp_path / "in"),
            "--output", str(tmp_path / name), "--workers", "1", "--no-progress",
        ]  # fmt: skip
        assert inspect_main(argv) == EXIT_INPUT_ERRORS  # the bad files are reported
        results, errors = all_records(tmp_path / name)
        assert sorted(e["image"] for e in errors) == sorted(bad)
        records[name] = {r["image"]: r for r in results}
    assert sorted(records["onnx"]) == sorted(images)  # every image exactly once
    for image, want in records["ckpt"].items():
        got = records["onnx"][image]
        assert got["decision"] == want["decision"]
        assert [d["fail"] for d in got["detections"]] == [d["fail"] for d in want["detections"]]
        for d_got, d_want in zip(got["detections"], want["detections"], strict=True):
            np.testing.assert_allclose(d_got["bbox"], d_want["bbox"], atol=0.02)
    # A restart of the finished job inspects nothing again.
    again = [
        "--checkpoint", str(onnx_path), "--input", str(tmp_path / "in"),
        "--output", str(tmp_path / "onnx"), "--workers", "1", "--no-progress",
    ]  # fmt: skip
    assert inspect_main(again) == EXIT_INPUT_ERRORS
    assert len(all_records(tmp_path / "onnx")[0]) == len(images)
