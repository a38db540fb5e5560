"""Detector: a trained checkpoint as a small inference API (Detectron2's DefaultPredictor idea).

Which detections a result holds, and which fail the part:

- *reported*: every detection scoring at least `report_threshold` (default `REPORT_DEFAULT`),
  useful for review and for lowering thresholds later;
- *defects* (`Prediction.defects`, `"fail": true` in files): detections scoring at least their
  class's threshold (the checkpoint's calibrated one unless overridden). One defect fails the
  image. A defect is always reported, even when its class threshold is below `report_threshold`.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.models.detection import FasterRCNN

from detection.core.errors import DetectionError
from detection.core.images import (
    MAX_PIXELS,
    ImageInput,
    check_image_tensor,
    image_tensor,
    to_float_image,
)
from detection.core.thresholds import REPORT_DEFAULT, ThresholdsLike
from detection.inference.onnx_model import is_onnx, load_onnx
from detection.inference.tiling import merge_detections, tile_windows
from detection.models.checkpoint import CheckpointMeta, load_model

PRECISIONS = ("auto", "32", "32-true", "16-mixed", "bf16-mixed")


@dataclass
class Prediction:
    """Detections of one image in its original pixels, and whether the part passes."""

    boxes: np.ndarray  # (N, 4) float32 xyxy
    scores: np.ndarray  # (N,) float32, decreasing
    labels: np.ndarray  # (N,) int64, 1..K
    defects: np.ndarray  # (N,) bool: score >= the class threshold
    class_names: list[str]  # per detection
    category_ids: list[int]  # per detection, the dataset's category ids
    width: int
    height: int
    image: str | None = None  # the file path, when the input was one

    @property
    def passed(self) -> bool:
        """True when no detection reaches its class threshold."""
        return not bool(self.defects.any())

    @property
    def decision(self) -> str:
        """'pass' or 'fail'."""
        return "pass" if self.passed else "fail"

    def to_record(self) -> dict[str, Any]:
        """The JSON Lines record of this image (boxes rounded to 0.01 px)."""
        detections = [
            {
                "bbox": [round(float(v), 2) for v in box],
                "score": round(float(score), 5),
                "label": int(label),
                "class_name": name,
                "category_id": int(category),
                "fail": bool(defect),
            }
            for box, score, label, name, category, defect in zip(
                self.boxes,
                self.scores,
                self.labels,
                self.class_names,
                self.category_ids,
                self.defects,
                strict=True,
            )
        ]
        return {
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "decision": self.decision,
            "detections": detections,
        }


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> the first CUDA device if there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DetectionError(f"device '{device}' requested but CUDA is not available")
    return resolved


def resolve_precision(precision: str, device: torch.device) -> str:
    """'32', '16-mixed' or 'bf16-mixed' for `device`; mixed precision is only used on CUDA."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got '{precision}'")
    if precision == "auto":
        return "16-mixed" if device.type == "cuda" else "32"
    if precision == "32-true":
        return "32"
    if precision != "32" and device.type != "cuda":
        # CPU autocast (bf16) runs detection several times slower than float32 on common CPUs.
        warnings.warn(
            f"precision '{precision}' is only used on CUDA; running float32 on {device}",
            stacklevel=3,
        )
        return "32"
    return precision


def _as_list(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """One image or many -> a list; a 4-D tensor is a batch of CHW images."""
    if isinstance(images, str | Path | np.ndarray | Image.Image):
        return [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.ndim == 4 else [images]
    return list(images)


class Detector:
    """A trained detector with its class names and thresholds: images in, `Prediction`s out.

    The Detector sets the model's internal score threshold to the lowest score it must report.
    """

    def __init__(
        self,
        model: FasterRCNN,
        meta: CheckpointMeta,
        device: str | torch.device = "auto",
        precision: str = "auto",
        thresholds: ThresholdsLike = None,
        report_threshold: float = REPORT_DEFAULT,
        tile: int | None = None,
        overlap: float = 0.2,
        max_pixels: int | None = MAX_PIXELS,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.meta = meta
        self.report_threshold = float(report_threshold)
        # The checkpoint's thresholds with the caller's overrides: what fails a part here.
        self.decision_thresholds = meta.thresholds.updated(thresholds)
        self.decision_thresholds.resolve(meta.class_names)  # unknown names fail now, not mid-job
        self.tile = tile
        self.overlap = overlap
        self.max_pixels = max_pixels
        if tile is not None:
            tile_windows(tile, tile, tile, overlap)  # validates tile and overlap now, not mid-job
        self._thresholds = self.decision_thresholds.label_tensor(meta.class_names)
        self.model = model.eval().to(self.device)
        self.model.roi_heads.score_thresh = self.decision_thresholds.lowest(
            meta.class_names, self.report_threshold
        )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        precision: str = "auto",
        thresholds: ThresholdsLike = None,
        **kwargs: Any,
    ) -> Detector:
        """Load a checkpoint written by DetectionModule, or an exported .onnx model (run with
        onnxruntime); kwargs go to `Detector(...)`."""
        model, meta = load_onnx(path) if is_onnx(path) else load_model(path)
        return cls(model, meta, device=device, precision=precision, thresholds=thresholds, **kwargs)

    @property
    def class_names(self) -> list[str]:
        """Names of labels 1..K."""
        return list(self.meta.class_names)

    @property
    def thresholds(self) -> dict[str, float]:
        """The class thresholds in use: class name -> score that fails a part."""
        return self.decision_thresholds.resolve(self.meta.class_names)

    def predict(
        self,
        images: ImageInput | Iterable[ImageInput],
        batch_size: int = 8,
        bgr: bool = False,
    ) -> list[Prediction]:
        """Detect objects in one image or many; always returns a list, one Prediction per image.

        Accepts file paths, numpy arrays (RGB, or BGR with `bgr=True`), PIL images and CHW tensors,
        mixed freely: uint8 in 0..255 or float in 0..1 (16-bit arrays keep their high byte).
        Anything else (floats above 1, NaN, an empty image, another dtype or shape, more than
        `max_pixels`) raises a ValueError naming the input: its path, or "image #i".
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_list(images)
        results: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            loaded = [
                image_tensor(x, f"image #{i}", bgr=bgr, max_pixels=self.max_pixels)
                for i, x in enumerate(items[start : start + batch_size], start)
            ]
            results.extend(
                self._predict([t for t, _ in loaded], [n for _, n in loaded], batch_size)
            )
        return results

    def predict_tensors(
        self,
        images: Sequence[torch.Tensor],
        names: Sequence[str | None] | None = None,
        batch_size: int | None = None,
    ) -> list[Prediction]:
        """Predict RGB CHW tensors (uint8, or float in 0..1) in one go; tiles run `batch_size` at a
        time. A tensor of another shape, dtype or range raises a ValueError naming it."""
        names = list(names) if names is not None else [None] * len(images)
        checked = [
            check_image_tensor(image, name or f"image #{i}", self.max_pixels)
            for i, (image, name) in enumerate(zip(images, names, strict=True))
        ]
        return self._predict(checked, names, batch_size)

    def _predict(
        self, images: Sequence[torch.Tensor], names: Sequence[str | None], batch_size: int | None
    ) -> list[Prediction]:
        if not images:
            return []
        on_device = [img.to(self.device, non_blocking=True) for img in images]
        if self.tile is None:
            outputs = self._forward(on_device, batch_size or len(on_device))
            raw = [(o["boxes"], o["scores"], o["labels"]) for o in outputs]
        else:
            raw = self._forward_tiled(on_device, batch_size or len(on_device))
        return [
            self._to_prediction(boxes, scores, labels, img, name)
            for (boxes, scores, labels), img, name in zip(raw, images, names, strict=True)
        ]

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "16-mixed":
            return torch.autocast("cuda", dtype=torch.float16)
        if self.precision == "bf16-mixed":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _forward(
        self, images: list[torch.Tensor], batch_size: int
    ) -> list[dict[str, torch.Tensor]]:
        """Run the model `batch_size` images at a time; uint8 becomes float on the device."""
        outputs: list[dict[str, torch.Tensor]] = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(images), batch_size):
                chunk = [to_float_image(img).float() for img in images[start : start + batch_size]]
                outputs.extend(self.model(chunk))
        return outputs

    def _forward_tiled(
        self, images: list[torch.Tensor], batch_size: int
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Cut every image into windows, run all windows batched, merge back per image."""
        assert self.tile is not None
        crops: list[torch.Tensor] = []
        windows_of: list[list[tuple[int, int, int, int]]] = []
        for img in images:
            windows = tile_windows(img.shape[2], img.shape[1], self.tile, self.overlap)
            windows_of.append(windows)
            crops.extend(img[:, y0:y1, x0:x1] for x0, y0, x1, y1 in windows)
        outputs = self._forward(crops, batch_size)
        merged = []
        start = 0
        for windows in windows_of:
            part = outputs[start : start + len(windows)]
            start += len(windows)
            merged.append(
                merge_detections(
                    [o["boxes"].float() for o in part],
                    [o["scores"].float() for o in part],
                    [o["labels"] for o in part],
                    windows,
                    iou_threshold=self.model.roi_heads.nms_thresh,
                    max_detections=self.model.roi_heads.detections_per_img,
                )
            )
        return merged

    def _to_prediction(
        self,
        boxes: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        image: torch.Tensor,
        name: str | None,
    ) -> Prediction:
        boxes, scores, labels = boxes.float().cpu(), scores.float().cpu(), labels.cpu()
        defects = scores >= self._thresholds[labels]
        keep = (scores >= self.report_threshold) | defects
        labels_np = labels[keep].numpy().astype(np.int64)
        return Prediction(
            boxes=boxes[keep].numpy().reshape(-1, 4),
            scores=scores[keep].numpy(),
            labels=labels_np,
            defects=defects[keep].numpy(),
            class_names=[self.meta.class_names[i - 1] for i in labels_np],
            category_ids=[int(self.meta.category_ids[i - 1]) for i in labels_np],
            width=int(image.shape[2]),
            height=int(image.shape[1]),
            image=name,
        )
