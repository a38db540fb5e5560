"""Evaluating a model on a COCO split (Detectron2's ``inference_on_dataset`` idea).

`process_batch` runs a model over one batch and feeds an evaluator; `detection test` (through
DetectionModule) and `evaluate_checkpoint` both go through it, so a checkpoint scores the same
in a training run's test, the demo and the scripts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from detection.core.coco_format import output_results
from detection.core.devices import resolve_device
from detection.core.thresholds import ThresholdsLike
from detection.evaluation.evaluator import DetectionEvaluator, Evaluation
from detection.models.checkpoint import load_model


def process_batch(
    model: torch.nn.Module,
    images: list[torch.Tensor],
    targets: Sequence[Mapping[str, Any]],
    evaluator: DetectionEvaluator,
    category_ids: Sequence[int],
) -> None:
    """Detect objects in float 0..1 images and record them with their targets' image ids."""
    for target, output in zip(targets, model(images), strict=True):
        image_id = int(target["image_id"])
        evaluator.process(image_id, output_results(image_id, output, category_ids))


def evaluate_checkpoint(
    checkpoint: str | Path,
    annotations: str | Path,
    images: str | Path,
    *,
    thresholds: ThresholdsLike = None,
    device: str | torch.device = "auto",
    batch_size: int = 4,
    workers: int = 0,
    iou_threshold: float = 0.5,
    target_recall: float | None = None,
    backend: str = "faster",
    area_ranges: Mapping[str, Sequence[float]] | None = None,
) -> Evaluation:
    """Score a checkpoint on a COCO split: COCO metrics, operating point and image level.

    The same numbers as `detection test` on that split (both go through `process_batch`).

    Args:
        checkpoint: a checkpoint written by `DetectionModule` (``.ckpt``).
        annotations: the split's COCO json.
        images: the folder the json's file names are relative to.
        thresholds: overrides of the checkpoint's thresholds (calibrated on its validation)
            for the operating point and the image-level decisions.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda:N"``.
        batch_size: images per model call.
        workers: DataLoader worker processes.
        iou_threshold: IoU at which a detection matches a ground-truth box (operating point).
        target_recall: also report per class the threshold reaching this recall.
        backend: the COCO evaluator, ``"faster"`` (faster-coco-eval) or ``"pycocotools"``.
        area_ranges: COCO's small/medium/large area ranges, if not the defaults.

    Returns:
        An `Evaluation`: the report (COCO metrics, operating point, image level) and the
        precision-recall curves.

    Raises:
        WeightsError: the checkpoint cannot be loaded or cannot decide (non-finite weights,
            thresholds outside 0..1).
        InvalidInputError: a bad annotation file or image.
        ValueError: thresholds outside 0..1 or naming classes the checkpoint does not know.
    """
    from detection.data.datamodule import CocoDataModule

    # The checkpoint entry of the model loader (`detection.inference.model_files` sits on
    # the floor beside this one): the same checks, the model's own output settings.
    model, meta = load_model(checkpoint)
    device = resolve_device(device)
    model.to(device)
    decision = meta.decision_thresholds(thresholds)
    data = CocoDataModule(
        test_annotations=str(annotations),
        test_images=str(images),
        eval_batch_size=batch_size,
        num_workers=workers,
        pin_memory=False,
    )
    data.setup("test")
    evaluator = DetectionEvaluator(
        data.ground_truth("test"),
        backend=backend,
        area_ranges=area_ranges,
        iou_threshold=iou_threshold,
        score_threshold=decision,
        target_recall=target_recall,
    )
    with torch.inference_mode():
        for batch in data.test_dataloader():
            batch_images, targets = batch
            on_device = [image.to(device, non_blocking=True) for image in batch_images]
            on_device, targets = data.finish_batch((on_device, targets))
            process_batch(model, on_device, targets, evaluator, meta.category_ids)
    return evaluator.evaluation()
