"""evaluate_checkpoint scores a checkpoint as the Detector sees it, with the checkpoint's thresholds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from square_model import CATEGORY_IDS, CLASS_NAMES, square_image

from detection import Detector, evaluate_checkpoint, evaluate_detections

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Five square images (one without a square) as a COCO split."""
    root = tmp_path_factory.mktemp("split")
    rng = np.random.default_rng(5)
    images, annotations = [], []
    for i in range(5):
        pixels, boxes = square_image(rng, 64, 64, squares=0 if i == 4 else 1)
        cv2.imwrite(str(root / f"{i}.png"), pixels[:, :, ::-1])
        images.append({"id": 10 + i, "file_name": f"{i}.png", "width": 64, "height": 64})
        for x0, y0, x1, y1 in boxes.tolist():
            box = [x0, y0, x1 - x0, y1 - y0]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": 10 + i, "category_id": CATEGORY_IDS[0],
                 "bbox": box, "area": box[2] * box[3], "iscrowd": 0}
            )  # fmt: skip
    gt = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": CATEGORY_IDS[0], "name": CLASS_NAMES[0]}],
    }
    (root / "gt.json").write_text(json.dumps(gt))
    return root / "gt.json", root


def test_detections_are_the_detectors_and_thresholds_the_checkpoints(
    square_checkpoint: Path,
    split: tuple[Path, Path],
) -> None:
    gt, root = split
    evaluation = evaluate_checkpoint(square_checkpoint, gt, root, device="cpu", batch_size=2)
    detector = Detector.from_checkpoint(square_checkpoint, device="cpu")
    for i in range(5):
        mine = [d for d in evaluation.detections if d["image_id"] == 10 + i and d["score"] >= 0.05]
        prediction = detector.predict(root / f"{i}.png")[0]
        assert len(mine) == len(prediction.scores)
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)]
        np.testing.assert_allclose(np.reshape(xyxy, (-1, 4)), prediction.boxes, atol=1e-3)
    op = evaluation.report["operating_point"]
    assert op["score_threshold"] == detector.thresholds == {"square": 0.5}
    # The report is the evaluator's on exactly these detections.
    again = evaluate_detections(gt, evaluation.detections, score_threshold={"square": 0.5})
    again = again.report
    assert again["operating_point"] == op and again["AP"] == evaluation.report["AP"]
    assert evaluation.report["settings"]["images"] == 5


def test_thresholds_override_the_checkpoints(
    square_checkpoint: Path,
    split: tuple[Path, Path],
) -> None:
    gt, root = split
    report = evaluate_checkpoint(square_checkpoint, gt, root, thresholds=0.99, device="cpu").report
    assert report["operating_point"]["per_class"]["square"]["threshold"] == 0.99


def test_eval_deeppcb_script_runs_on_the_public_api(
    square_checkpoint: Path,
    split: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    spec = importlib.util.spec_from_file_location("eval_deeppcb", ROOT / "scripts/eval_deeppcb.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    gt, root = split
    out = tmp_path / "figures.json"
    argv = ["--ckpt", str(square_checkpoint), "--test", str(gt), "--images", str(root)]
    assert script.main([*argv, "--workers", "0", "--calibrate", str(gt), "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["images"] == 5 and figures["thresholds_source"] == f"best F1 on {gt}"
    # Calibrated on the test split itself, the honest thresholds are the oracle's.
    assert figures["thresholds_calibrated"] == figures["thresholds_oracle"]
    imports = [
        line for line in (ROOT / "scripts/eval_deeppcb.py").read_text().splitlines()
        if line.startswith(("from detection", "import detection"))
    ]  # fmt: skip
    assert imports and all(line.startswith("from detection import ") for line in imports)


def test_evaluate_reads_the_thresholds_of_a_model_file(square_checkpoint: Path) -> None:
    from detection.commands.common import load_thresholds_file

    assert load_thresholds_file(square_checkpoint) == {"square": 0.5}
