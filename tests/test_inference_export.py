"""TorchScript export: the scripted model alone gives the Detector's boxes and decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from square_model import square_image

from detection.commands.export import main
from detection.inference.export import load_torchscript
from detection.inference.predictor import Detector

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py


def test_exported_model_gives_the_detector_boxes(
    tmp_path: Path,
    square_checkpoint: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    out = tmp_path / "deploy" / "model.pt"
    assert main(["--checkpoint", str(square_checkpoint), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    module, info = load_torchscript(out)
    assert info["class_names"] == ["square"] and info["category_ids"] == [7]
    assert info["label_thresholds"] == [0.5] and info["report_threshold"] == 0.05

    rng = np.random.default_rng(4)
    images = [square_image(rng, 72, 64, squares=k)[0] for k in (1, 0)]
    detector = Detector.from_checkpoint(square_checkpoint, device="cpu")
    expected = detector.predict(images)
    tensors = [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im in images]
    with torch.no_grad():
        _, outputs = module(tensors)  # scripted detection models return (losses, detections)
    thresholds = torch.tensor([float("inf"), *info["label_thresholds"]])
    for output, prediction in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(output["boxes"].numpy(), prediction.boxes, atol=1e-3)
        np.testing.assert_allclose(output["scores"].numpy(), prediction.scores, atol=1e-5)
        passed = not bool((output["scores"] >= thresholds[output["labels"]]).any())
        assert passed == prediction.passed
    assert not expected[0].passed and expected[1].passed


def test_export_of_a_missing_checkpoint_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["--checkpoint", str(tmp_path / "nope.ckpt"), "--out", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope.ckpt" in err and "not found" in err and "\n" not in err
    assert not (tmp_path / "m.pt").exists()


def test_the_torchscript_file_opens_as_a_detector(tmp_path: Path, square_checkpoint: Path) -> None:
    out = tmp_path / "model.pt"
    assert main(["--checkpoint", str(square_checkpoint), "--out", str(out)]) == 0
    rng = np.random.default_rng(6)
    images = [square_image(rng, 72, 64, squares=k)[0] for k in (1, 0, 2)]
    eager = Detector.from_checkpoint(square_checkpoint, device="cpu").predict(images)
    scripted = Detector.from_checkpoint(out, device="cpu")
    assert scripted.thresholds == {"square": 0.5} and scripted.class_names == ["square"]
    for want, got in zip(eager, scripted.predict(images, batch_size=1), strict=True):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        assert got.defects.tolist() == want.defects.tolist() and got.passed == want.passed
