"""An image's detections are its own: alone or in a batch of mixed sizes, on every model format.

A batch padded to its largest image once changed a 380x96 image's decision (anchors in the
padding competed for the top-k and NMS); the Detector now batches only equal-sized images.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from square_model import square_image
from test_onnx import onnx_path  # noqa: F401 - the exported square detector, a fixture

from detection.inference.predictor import Detector
from detection.inference.size_groups import run_by_size, same_size_batches
from detection.inspect.job import InspectConfig, run_inspect
from detection.inspect.writer import iter_results
from detection.models.checkpoint import load_model
from detection.models.faster_rcnn import as_torchvision

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py

# A float32 network's outputs move by far less than sqrt(eps) (3.5e-4) of their scale when only
# the batch around an image changes (other kernels, other summation order): scores are in 0..1,
# boxes in pixels of the image, so a box may move by that fraction of the image's long side.
FLOAT32_TOLERANCE = float(np.finfo(np.float32).eps) ** 0.5
THRESHOLD = 0.5  # the square detector's class threshold
# (width, height): sizes that repeat (batched together) and sizes that occur once, the long
# thin 380x96 of the report among them; 8 images, one batch of 8.
SIZES = [(380, 96), (64, 64), (380, 96), (96, 96), (64, 64), (128, 40), (380, 96), (200, 150)]


def mixed_images() -> list[np.ndarray]:
    """Eight images of mixed sizes, each with one bright square a quarter of its short side."""
    rng = np.random.default_rng(5)
    return [square_image(rng, w, h, squares=1, size=max(6, min(w, h) // 4))[0] for w, h in SIZES]


def assert_same_detections(alone, batched) -> None:
    """Each image: the same detections (matched one to one: equal scores may come in any order)
    within float32 tolerances, and the same decision unless a score is within them of the
    threshold."""
    for want, got in zip(alone, batched, strict=True):
        assert (got.width, got.height) == (want.width, want.height)
        assert len(got.scores) == len(want.scores), want.image
        box_tolerance = FLOAT32_TOLERANCE * max(want.width, want.height)
        unmatched = list(range(len(got.scores)))
        for box, score, label in zip(want.boxes, want.scores, want.labels, strict=True):
            match = next(
                (
                    j
                    for j in unmatched
                    if got.labels[j] == label
                    and abs(got.scores[j] - score) <= FLOAT32_TOLERANCE
                    and np.abs(got.boxes[j] - box).max() <= box_tolerance
                ),
                None,
            )
            assert match is not None, f"{(want.width, want.height)}: {box} {score} not in batch"
            unmatched.remove(match)
        borderline = np.abs(want.scores - THRESHOLD) <= FLOAT32_TOLERANCE
        if not borderline.any():
            assert got.decision == want.decision


def test_same_size_batches_keep_order_and_size() -> None:
    keys = ["a", "b", "a", "c", "a", "b", "a"]
    assert same_size_batches(keys, 2) == [[0, 2], [4, 6], [1, 5], [3]]
    assert same_size_batches(keys, 8) == [[0, 2, 4, 6], [1, 5], [3]]
    assert same_size_batches([], 4) == []
    with pytest.raises(ValueError, match="batch_size"):
        same_size_batches(keys, 0)


def test_run_by_size_returns_outputs_in_input_order() -> None:
    import torch

    images = [torch.zeros(3, h, w) for h, w in [(4, 5), (6, 5), (4, 5), (6, 5), (7, 7)]]
    calls = []

    def run(batch):
        calls.append([tuple(i.shape) for i in batch])
        assert len({tuple(i.shape) for i in batch}) == 1  # one size a call
        return [tuple(i.shape) for i in batch]

    assert run_by_size(images, 8, run) == [tuple(i.shape) for i in images]
    assert len(calls) == 3
    with pytest.raises(ValueError, match="returned 0 outputs for 2 images"):
        run_by_size([images[0], images[2]], 8, lambda batch: [])


@pytest.mark.parametrize("impl", ["batched", "torchvision"])
def test_detector_gives_an_image_its_own_detections_in_any_batch(
    square_checkpoint: Path, impl: str
) -> None:
    model, meta = load_model(square_checkpoint)
    detector = Detector(model if impl == "batched" else as_torchvision(model), meta, device="cpu")
    images = mixed_images()
    alone = [detector.predict(image)[0] for image in images]
    assert_same_detections(alone, detector.predict(images, batch_size=8))
    # Any order of the neighbours, and batches that split the groups, too.
    order = [5, 0, 7, 2, 1, 6, 3, 4]
    shuffled = detector.predict([images[i] for i in order], batch_size=3)
    assert_same_detections([alone[i] for i in order], shuffled)
    assert {p.decision for p in alone} == {"pass", "fail"}  # both outcomes compared


def test_onnx_detector_gives_an_image_its_own_detections(onnx_path: Path) -> None:  # noqa: F811
    detector = Detector.from_checkpoint(onnx_path, device="cpu")
    images = mixed_images()
    alone = [detector.predict(image)[0] for image in images]
    assert_same_detections(alone, detector.predict(images, batch_size=8))


def test_inspect_decides_each_image_as_alone_whatever_the_batch(
    tmp_path: Path, square_checkpoint: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i, image in enumerate(mixed_images()):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    detector = Detector.from_checkpoint(square_checkpoint, device="cpu")
    records = {}
    for batch_size in (1, 8):
        out = tmp_path / f"batch{batch_size}"
        config = InspectConfig(
            str(square_checkpoint), [str(folder)], str(out), batch_size=batch_size, workers=0,
            progress=False, fsync=False,
        )  # fmt: skip
        assert run_inspect(config, detector)["complete"]
        records[batch_size] = {r["image"]: r for r in iter_results(out)}
    assert sorted(records[1]) == sorted(records[8]) and len(records[1]) == len(SIZES)
    for image, want in records[1].items():
        got = records[8][image]
        borderline = [d for d in want["detections"] if abs(d["score"] - THRESHOLD) <= 1e-4]
        assert got["decision"] == want["decision"] or borderline, image
        assert len(got["detections"]) == len(want["detections"])
        # Lines keep 5 decimals of a score and 2 of a pixel: allow one unit of that rounding.
        scores = sorted(d["score"] for d in want["detections"])
        assert np.allclose(sorted(d["score"] for d in got["detections"]), scores, atol=2e-5)
