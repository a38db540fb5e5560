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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from detection.core.devices import resolve_device
from detection.core.errors import InvalidInputError, UnsupportedInputError
from detection.core.images import (
    MAX_PIXELS,
    ImageInput,
    check_image_tensor,
    image_tensor,
    to_float_image,
)
from detection.core.thresholds import REPORT_DEFAULT, ThresholdsLike, check_report_threshold
from detection.inference.model_files import load_model_file
from detection.inference.prediction import Prediction
from detection.inference.size_groups import run_by_size
from detection.inference.tiling import merge_detections, tile_windows
from detection.models.checkpoint import CheckpointMeta
from detection.models.runtime import DetectorModel, as_detector_model

__all__ = ["Detector", "Prediction", "resolve_device", "resolve_precision"]

PRECISIONS = ("auto", "32", "32-true", "16-mixed", "bf16-mixed")


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


ACCEPTED = "a file path, a numpy array, a PIL image or a CHW tensor (or a list of them)"


def _as_list(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """One image or many -> a list; a 4-D tensor is a batch of CHW images.

    Raises UnsupportedInputError (a ValueError) for anything that is neither an image nor an
    iterable of images: None, a number, encoded bytes.
    """
    if isinstance(images, str | Path | np.ndarray | Image.Image):
        return [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, bytes | bytearray | memoryview):
        raise UnsupportedInputError(
            "images",
            f"unsupported image type {type(images).__name__} (an encoded file? pass its path, "
            f"or decode it with detection.read_image); accepted: {ACCEPTED}",
        )
    if isinstance(images, Iterable):
        return list(images)
    raise UnsupportedInputError(
        "images", f"unsupported image type {type(images).__name__}; accepted: {ACCEPTED}"
    )


def _check_input(image: Any, name: str) -> None:
    """A ValueError naming the input when it is of no accepted kind, or a tensor without data."""
    if isinstance(image, torch.Tensor):
        if image.device.type == "meta":
            raise InvalidInputError(
                name, "tensor on the meta device holds no pixels; pass a CPU or CUDA tensor"
            )
        return
    if not isinstance(image, str | Path | np.ndarray | Image.Image):
        raise UnsupportedInputError(
            name, f"unsupported image type {type(image).__name__}; accepted: {ACCEPTED}"
        )


class Detector:
    """A trained detector with its class names and thresholds: images in, `Prediction`s out.

    Args:
        model: the model to run: a torch detection model (torchvision's `FasterRCNN` or a
            `BatchedFasterRCNN`; it is switched to eval mode and moved to `device`, its own
            settings left as they are) or any `DetectorModel` (ONNX Runtime, TorchScript).
        meta: the model's class names, category ids and stored thresholds.
        device: ``"auto"`` (the first CUDA device if there is one), ``"cpu"``, ``"cuda:N"``.
        precision: ``"auto"`` (16-mixed on CUDA, else 32), ``"32"``, ``"16-mixed"`` or
            ``"bf16-mixed"``; mixed precision is used on CUDA only.
        thresholds: overrides of the stored thresholds: a number (every class), a mapping
            {class name: score} or command-line strings (``["0.6", "scratch=0.4"]``).
        report_threshold: lowest score kept in results (defects are always kept), in 0..1.
        tile: cut images into square windows of this many pixels (small objects in large
            images); None runs whole images.
        overlap: fraction by which neighbouring windows overlap.
        max_pixels: largest image accepted (a decompression-bomb guard); None: no limit.

    Raises:
        ValueError: a threshold or `report_threshold` outside 0..1, a threshold naming an
            unknown class, an unknown precision, or impossible tile settings.
        DetectionError: a CUDA device without CUDA, or an exported model whose score floor
            lies above what the thresholds need.
    """

    def __init__(
        self,
        model: nn.Module | DetectorModel,
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
        self.report_threshold = check_report_threshold(report_threshold)
        # The model's thresholds with the caller's overrides: what fails a part here (unknown
        # class names and values outside 0..1 fail now, not mid-job).
        self.decision_thresholds = meta.decision_thresholds(thresholds)
        self.tile = tile
        self.overlap = overlap
        self.max_pixels = max_pixels
        if tile is not None:
            tile_windows(tile, tile, tile, overlap)  # validates tile and overlap now, not mid-job
        self._thresholds = self.decision_thresholds.label_tensor(meta.class_names)
        lowest = self.decision_thresholds.lowest(meta.class_names, self.report_threshold)
        self.model: DetectorModel = as_detector_model(model).with_min_score(lowest).to(self.device)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        precision: str = "auto",
        thresholds: ThresholdsLike = None,
        **kwargs: Any,
    ) -> Detector:
        """Load a trained model of any format the model loader reads.

        Args:
            path: a checkpoint written by `DetectionModule` (``.ckpt``), or a model exported
                by `detection export` (``.onnx``, run with onnxruntime; ``.pt``, TorchScript).
            device: see `Detector`.
            precision: see `Detector`.
            thresholds: overrides of the file's thresholds; see `Detector`.
            **kwargs: the other arguments of `Detector` (``report_threshold``, ``tile``, ...).

        Returns:
            The Detector, its model on `device`.

        Raises:
            WeightsError: the file is missing, unreadable or holds a model that cannot decide
                (non-finite weights, stored thresholds outside 0..1), naming file and field.
            ValueError: see `Detector`.
            DetectionError: a runtime the format needs is not installed; see `Detector`.
        """
        loaded = load_model_file(path)
        return cls(
            loaded.model,
            loaded.meta,
            device=device,
            precision=precision,
            thresholds=thresholds,
            **kwargs,
        )

    @property
    def class_names(self) -> list[str]:
        """Names of labels 1..K (label i is ``class_names[i - 1]``)."""
        return list(self.meta.class_names)

    @property
    def runs_in_forked_workers(self) -> bool:
        """Whether a forked DataLoader worker can run this model (OpenVINO's threads cannot)."""
        return getattr(self.model, "runs_in_forked_workers", True)

    @property
    def thresholds(self) -> dict[str, float]:
        """The class thresholds in use: class name -> score that fails a part."""
        return dict(self.decision_thresholds.per_class)

    def predict(
        self,
        images: ImageInput | Iterable[ImageInput],
        batch_size: int = 8,
        bgr: bool = False,
    ) -> list[Prediction]:
        """Detect objects in one image or many.

        Args:
            images: one image or an iterable of them, mixed freely: file paths, numpy arrays
                (HxW or HxWxC; RGB, or BGR with `bgr=True`), PIL images and CHW tensors (a 4-D
                tensor is a batch); uint8 in 0..255 or float in 0..1 (16-bit arrays keep their
                high byte).
            batch_size: images per model call.
            bgr: numpy arrays are in OpenCV's BGR order.

        Returns:
            One `Prediction` per image, in input order (always a list).

        Raises:
            ValueError: an input of another kind (None, a number, encoded bytes), floats above
                1, NaN, an empty image, another dtype or shape, more than `max_pixels`, a
                tensor on the meta device; the message names the input (its path, or
                "image #i"). ImageReadError (a ValueError) for a file that cannot be decoded.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = _as_list(images)
        results: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            chunk = list(enumerate(items[start : start + batch_size], start))
            for i, x in chunk:
                _check_input(x, f"image #{i}")
            loaded = [
                image_tensor(x, f"image #{i}", bgr=bgr, max_pixels=self.max_pixels)
                for i, x in chunk
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
        """Predict RGB CHW tensors (uint8, or float in 0..1) in one go.

        Args:
            images: CHW tensors with 1 or 3 channels.
            names: a name per image for the predictions and for error messages.
            batch_size: images (or tiles) per model call; None: all at once.

        Returns:
            One `Prediction` per image.

        Raises:
            ValueError: a tensor of another shape, dtype or range, or on the meta device,
                naming it.
        """
        names = list(names) if names is not None else [None] * len(images)
        checked = []
        for i, (image, name) in enumerate(zip(images, names, strict=True)):
            _check_input(image, name or f"image #{i}")
            checked.append(check_image_tensor(image, name or f"image #{i}", self.max_pixels))
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
        """Run the model on batches of up to `batch_size` equal-sized images (so an image's
        detections do not depend on its neighbours); uint8 becomes float on the device."""
        with torch.inference_mode(), self._autocast():
            return run_by_size(
                images,
                batch_size,
                lambda chunk: self.model([to_float_image(i).float() for i in chunk]),
            )

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
                    iou_threshold=self.model.settings.nms_iou,
                    max_detections=self.model.settings.detections_per_image,
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
