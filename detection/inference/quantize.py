"""INT8 post-training quantization with NNCF, and the accuracy guard every reduced precision
(INT8 weights, bf16 compute) must pass before an export is written.

Calibration reads images the user names as a COCO split (the checkpoint's validation split by
default); a few hundred images are enough for NNCF's statistics. Only the backbone and FPN are
quantized: they hold nearly all the convolutions' work, while the RPN and box heads decide which
boxes survive and with what score, and quantizing them moved decisions on a small trained model
(10 of 30 images changed with them quantized, none without). Everything outside the backbone
stays float, not only the heads: NNCF also puts a quantizer on the box coordinates where the
postprocess rescales them (ops named `/model/...`, outside any head's scope), which rounds every
box to 1/255 of its calibration range (1.1 px on DeepPCB at 320 px: test mAP50 0.794 -> 0.731)
or to zero when the calibration images gave no detections (mAP50 0). With the backbone alone
quantized: DeepPCB test 0.7944 vs float 0.7937, no decision changed (README).

The stem convolution (the 7x7 on the raw image) stays float too. Its input is the image itself,
whose 8-bit quantizer adds a rounding the later layers amplify; it is about 1 % of R50-FPN's
work at 800 px (2 of some 170 GMAC). On the demo model (calibrated on 60 validation images) keeping it float took
the INT8 drop on the test split from 0.030 to 0.001 mAP50, and on 600 freshly generated images
from 0.011 (5 decisions changed) to 0.002 (none changed); mean score change of matched boxes
0.044 -> 0.032.

The guard runs the float model and the candidate over the same split, scores both with the
project's evaluator (`evaluate_detections`) and compares image decisions one by one. It fails
when mAP50 drops by more than `max_map50_drop` or more than `max_changed_share` of the images
change their pass/fail decision.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detection.core.coco_format import read_json, results
from detection.core.errors import DetectionError
from detection.core.images import image_tensor, to_float_image
from detection.evaluation.evaluator import evaluate_detections
from detection.inference.openvino_model import require_openvino
from detection.inference.predictor import Detector, Prediction
from detection.models.checkpoint import open_checkpoint

CALIBRATION_IMAGES = 300
MAX_MAP50_DROP = 0.01
MAX_CHANGED_SHARE = 0.01
# The export's node names: every op not under the backbone (body and FPN) stays float, see the
# module docstring. NNCF matches patterns from the start of a name (`re.match`).
QUANTIZED_SCOPE = "/model/backbone/"
FLOAT_SCOPES = (f"(?!{QUANTIZED_SCOPE})",)


class AccuracyGuardError(DetectionError):
    """A reduced-precision model lost more accuracy than the guard allows."""


@dataclass(frozen=True)
class CocoSplit:
    """A COCO json and the folder its file names are relative to."""

    annotations: Path
    images: Path

    def image_paths(self, limit: int | None = None) -> list[tuple[int, str]]:
        """(image id, file path) of the split's images in id order, the first `limit` only."""
        data = read_json(self.annotations)
        records = data.get("images") if isinstance(data, dict) else None
        if not isinstance(records, list) or not records:
            raise DetectionError(f"{self.annotations}: field 'images': no images to calibrate on")
        try:
            pairs = sorted((int(r["id"]), str(self.images / r["file_name"])) for r in records)
        except (KeyError, TypeError, ValueError):
            raise DetectionError(
                f"{self.annotations}: field 'images': every record needs an id and a file_name"
            ) from None
        return pairs[:limit] if limit is not None else pairs


def default_split(checkpoint: str | Path) -> CocoSplit:
    """The validation split a checkpoint was trained with (Lightning keeps the data module's
    settings in the checkpoint); a one-line error when it has none or it is gone."""
    _, ckpt = open_checkpoint(checkpoint, mmap=True)
    data = ckpt.get("datamodule_hyper_parameters") or {}
    annotations, images = data.get("val_annotations"), data.get("val_images")
    if not annotations or not images:
        raise DetectionError(
            f"{checkpoint}: no validation split recorded; name the calibration images with "
            "--calibration ANNOTATIONS.json --calibration-images FOLDER"
        )
    split = CocoSplit(Path(annotations), Path(images))
    if not split.annotations.is_file():
        raise DetectionError(
            f"{checkpoint}: its validation split {annotations} is not there; name one with "
            "--calibration ANNOTATIONS.json --calibration-images FOLDER"
        )
    return split


def calibration_arrays(split: CocoSplit, limit: int = CALIBRATION_IMAGES) -> list[np.ndarray]:
    """The split's first `limit` images as the graph's input: CHW float32 RGB 0..1."""
    arrays = []
    for _, path in split.image_paths(limit):
        tensor, _ = image_tensor(path, path)
        arrays.append(np.ascontiguousarray(to_float_image(tensor).float().numpy()))
    return arrays


def unshare_if_constants(model: Any) -> int:
    """Give each If body its own copy of constants it shares with other graphs; returns how many
    inputs were rewired. NNCF builds one graph a body and fails on an edge that leaves it
    ("Could not find a node ... in NNCFGraph"); the ONNX reader shares constants between the
    two NMS Ifs of Faster R-CNN."""
    opset = require_openvino("openvino.opset13")
    rewired = 0
    for op in model.get_ops():
        if op.get_type_name() != "If":
            continue
        for index in (0, 1):
            body = op.get_function(index)
            inside = {node.get_friendly_name() for node in body.get_ops()}
            for const in body.get_ops():
                if const.get_type_name() != "Constant":
                    continue
                targets = list(const.output(0).get_target_inputs())
                if all(t.get_node().get_friendly_name() in inside for t in targets):
                    continue
                copy = opset.constant(const.get_data().copy(), dtype=const.get_element_type())
                copy.set_friendly_name(f"{const.get_friendly_name()}/{op.get_friendly_name()}")
                for target in targets:
                    if target.get_node().get_friendly_name() in inside:
                        target.replace_source_output(copy.output(0))
                        rewired += 1
            rewired += unshare_if_constants(body)
    return rewired


def stem_convolution(model: Any) -> str:
    """The name of the backbone's first convolution in the graph's order: the one that reads
    the image (ResNet's conv1, MobileNet's first block), kept float (module docstring).

    Raises:
        DetectionError: the graph has no convolution under the backbone's scope.
    """
    for op in model.get_ordered_ops():
        name = op.get_friendly_name()
        if op.get_type_name() == "Convolution" and name.startswith(QUANTIZED_SCOPE):
            return name
    raise DetectionError(f"no convolution under {QUANTIZED_SCOPE} to quantize in this graph")


def quantize_model(model: Any, calibration: Sequence[np.ndarray]) -> Any:
    """An INT8 copy of an openvino.Model (backbone past its stem, and FPN, quantized), calibrated
    on images."""
    nncf = require_openvino("nncf")
    if not calibration:
        raise DetectionError("INT8 quantization needs at least one calibration image")
    nncf.set_log_level(logging.ERROR)
    model = model.clone()
    unshare_if_constants(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NNCF's notes on torch and batch axes
        return nncf.quantize(
            model,
            nncf.Dataset(list(calibration), lambda image: {"image": image}),
            preset=nncf.QuantizationPreset.MIXED,
            subset_size=len(calibration),
            ignored_scope=nncf.IgnoredScope(
                names=[stem_convolution(model)], patterns=list(FLOAT_SCOPES), validate=False
            ),
        )


@dataclass(frozen=True)
class GuardReport:
    """The float model against a candidate on one split."""

    candidate: str  # 'int8', 'bf16', ...
    images: int
    map50_reference: float
    map50_candidate: float
    decisions_changed: int
    max_map50_drop: float = MAX_MAP50_DROP
    max_changed_share: float = MAX_CHANGED_SHARE

    @property
    def map50_drop(self) -> float:
        """How much mAP50 the candidate lost (negative: it gained)."""
        return self.map50_reference - self.map50_candidate

    @property
    def changed_share(self) -> float:
        """The share of images whose pass/fail decision changed."""
        return self.decisions_changed / max(1, self.images)

    @property
    def passed(self) -> bool:
        """True when both the mAP50 drop and the changed decisions are within the margins."""
        # A hair of float slack: equal models must pass however the sums round.
        return (
            self.map50_drop <= self.max_map50_drop + 1e-9
            and self.changed_share <= self.max_changed_share + 1e-9
        )

    @property
    def scored(self) -> bool:
        """False when the split has no annotations: COCOeval's mAP50 is then -1 for both models
        and only the decisions are compared."""
        return self.map50_reference >= 0

    def summary(self) -> str:
        """One line: both mAP50s (or why there are none), the changed decisions and the margins."""
        if self.scored:
            accuracy = (
                f"{self.candidate} mAP50 {self.map50_candidate:.4f} vs float "
                f"{self.map50_reference:.4f} (drop {self.map50_drop:+.4f}, allowed "
                f"{self.max_map50_drop:g})"
            )
        else:
            accuracy = f"{self.candidate} mAP50 not compared (the split has no annotations)"
        return (
            f"{accuracy}; {self.decisions_changed} of {self.images} image decisions changed "
            f"(allowed {self.max_changed_share:.0%})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the model's metadata."""
        return {**asdict(self), "passed": self.passed}


def _records(predictions: list[Prediction], image_ids: list[int]) -> list[dict]:
    return [
        record
        for image_id, p in zip(image_ids, predictions, strict=True)
        for record in results(image_id, p.boxes, p.scores, p.category_ids)
    ]


def compare_models(
    reference: Detector,
    candidate: Detector,
    split: CocoSplit,
    name: str,
    max_map50_drop: float = MAX_MAP50_DROP,
    max_changed_share: float = MAX_CHANGED_SHARE,
) -> GuardReport:
    """Both detectors over the split: mAP50 by the project's evaluator, decisions image by image."""
    pairs = split.image_paths()
    image_ids, paths = [i for i, _ in pairs], [p for _, p in pairs]
    want = reference.predict(paths, batch_size=1)
    got = candidate.predict(paths, batch_size=1)
    maps = [
        float(evaluate_detections(split.annotations, _records(p, image_ids)).report["AP50"])
        for p in (want, got)
    ]
    changed = sum(a.passed != b.passed for a, b in zip(want, got, strict=True))
    return GuardReport(
        name, len(paths), maps[0], maps[1], changed, max_map50_drop, max_changed_share
    )


def enforce(report: GuardReport, warn_only: bool = False) -> GuardReport:
    """Raise AccuracyGuardError (one line) when the report fails, or only warn with `warn_only`."""
    if report.passed:
        return report
    message = f"accuracy guard failed: {report.summary()}"
    if not warn_only:
        raise AccuracyGuardError(
            message + "; export float32, calibrate on more images, or pass --guard warn"
        )
    warnings.warn(message, stacklevel=2)
    return report
