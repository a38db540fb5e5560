"""DetectionModule: the LightningModule around a torchvision Faster R-CNN."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from detection.core.errors import DetectionError, InvalidInputError
from detection.core.images import to_float_image
from detection.core.thresholds import Thresholds
from detection.models.checkpoint import CHECKPOINT_KEY, CheckpointMeta
from detection.models.faster_rcnn import DEFAULT_IMPL, build_model
from detection.training.flat_names import group_options
from detection.training.lr_schedule import lr_factor
from detection.training.options import (
    BatchedOptions,
    EvaluationOptions,
    OptimizationOptions,
    check_hyperparameters,
    split_model_kwargs,
)

log = logging.getLogger(__name__)

Batch = tuple[list[Tensor], list[dict[str, Any]]]


class NonFiniteLossError(DetectionError):
    """Training produced too many non-finite losses in a row."""


def as_float_images(images: list[Tensor]) -> list[Tensor]:
    """Float [3,H,W] images in 0..1; uint8 or gray batches from a bare DataLoader are finished here
    (under a Trainer the data module already did it on the device, and this is a no-op)."""
    return [to_float_image(image) for image in images]


class DetectionModule(L.LightningModule):
    """Faster R-CNN training; validation and test with COCO + operating-point metrics; predict.

    With LightningCLI the data module fills `num_classes`, `class_names` and `category_ids`
    from the COCO file. Checkpoints carry a `CheckpointMeta` (class list, model arguments,
    thresholds calibrated on the latest validation) beside Lightning's state.

    Args:
        model_name: one of `detection.models.faster_rcnn.available_models()`.
        num_classes: object classes K, without the background (default: ``len(class_names)``).
        class_names: names in label order (label i+1 is ``class_names[i]``).
        category_ids: COCO category ids in label order (default 1..K).
        weights: detection weights: a torchvision name (``"DEFAULT"``), a local file or None.
        weights_backbone: ImageNet backbone weights: a torchvision name, a local file or None.
        trainable_backbone_layers: backbone stages that train (0..5), as in torchvision.
        min_size: shorter side images are resized to (a list: one per training batch).
        max_size: longest side after the resize.
        model_kwargs: torchvision `FasterRCNN` arguments (``box_score_thresh``, ...). The
            batched options found here under their old names (``matrix_nms``,
            ``masked_pooling``), as configs and checkpoints written before they were typed
            hold them, move into `batched` with a DeprecationWarning.
        batched: the batched forward pass's options (`BatchedOptions`; ``impl: batched`` only).
        impl: ``"batched"`` (the whole batch at once) or ``"torchvision"`` (the reference).
        optimization: optimizer, learning rate and schedule (`OptimizationOptions`; see
            `optimizers_for`).
        evaluation: how validation and test score the model (`EvaluationOptions`); a run from
            a checkpoint takes these from the command line.
        **flat_settings: the optimisation and evaluation settings under their flat names
            (``lr``, ``score_threshold``...), as configs and checkpoints written before they
            were grouped hold them: they move into their group with a DeprecationWarning.

    Raises:
        InvalidInputError: no `num_classes` nor `class_names`, lists of another length than
            `num_classes`, a number out of its range (a negative lr...), an unknown batched
            option, or a flat setting given beside the same field of its group.
        TypeError: a keyword that is neither an argument above nor a flat setting.
        ConfigError: an unknown `model_name` or `impl`, or batched options with another `impl`.
        WeightsError: weights that cannot be found, downloaded, read or fitted.
    """

    def __init__(
        self,
        model_name: str = "fasterrcnn_resnet50_fpn",
        num_classes: int | None = None,
        class_names: list[str] | None = None,
        category_ids: list[int] | None = None,
        weights: str | None = None,
        weights_backbone: str | None = None,
        trainable_backbone_layers: int | None = None,
        min_size: int | list[int] = 800,
        max_size: int = 1333,
        model_kwargs: dict[str, Any] | None = None,
        batched: BatchedOptions = BatchedOptions(),  # noqa: B008 - frozen, so one shared value is safe
        impl: Literal["batched", "torchvision"] = DEFAULT_IMPL,
        optimization: OptimizationOptions = OptimizationOptions(),  # noqa: B008 - frozen
        evaluation: EvaluationOptions = EvaluationOptions(),  # noqa: B008 - frozen
        **flat_settings: Any,
    ) -> None:
        super().__init__()
        # Lightning passes a checkpoint's flat names here only because of **flat_settings: a
        # signature without it would drop them silently.
        groups = group_options(
            {"optimization": optimization, "evaluation": evaluation}, flat_settings
        )
        self.optimization: OptimizationOptions = groups["optimization"]
        self.evaluation: EvaluationOptions = groups["evaluation"]
        if num_classes is None:
            num_classes = len(class_names) if class_names else None
        if num_classes is None:
            raise InvalidInputError(None, "DetectionModule needs num_classes or class_names")
        check_hyperparameters(locals())
        class_names = (
            list(class_names) if class_names else [f"class_{i}" for i in range(1, num_classes + 1)]
        )
        category_ids = list(category_ids) if category_ids else list(range(1, num_classes + 1))
        if not len(class_names) == len(category_ids) == num_classes:
            raise InvalidInputError(
                None,
                f"num_classes={num_classes} but {len(class_names)} class names and "
                f"{len(category_ids)} category ids",
                field="num_classes",
            )
        batched, model_kwargs = split_model_kwargs(batched, model_kwargs)
        self.save_hyperparameters(ignore=list(flat_settings))
        # Plain values in the checkpoint (Lightning reads it back with weights_only=True), and
        # each group in one place whichever layout it came in.
        plain = {
            "batched": dataclasses.asdict(batched),
            "model_kwargs": model_kwargs or None,
            **{name: dataclasses.asdict(options) for name, options in groups.items()},
        }
        self.save_hyperparameters({**self.hparams, **plain})
        model_args = {"min_size": min_size, "max_size": max_size, "impl": impl}
        model_args.update(model_kwargs)
        model_args.update(batched.model_arguments())
        self.model = build_model(
            model_name,
            num_classes,
            weights=weights,
            weights_backbone=weights_backbone,
            trainable_backbone_layers=trainable_backbone_layers,
            **model_args,
        )
        self.meta = CheckpointMeta(
            model_name=model_name,
            num_classes=num_classes,
            class_names=class_names,
            category_ids=category_ids,
            model_args=model_args,
            thresholds=Thresholds(default=self.evaluation.score_threshold),
        )
        self.nonfinite_in_a_row = 0
        self.nonfinite_total = 0
        self.evaluator: Any = None
        self.last_evaluation: Any = None  # the latest validation or test Evaluation

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """Detections per image, boxes in the pixels of each input tensor."""
        return self.model(as_float_images(images))

    # ---------------------------------------------------------------- training
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        images, targets = batch
        targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
        loss_dict = self.model(as_float_images(images), targets)
        loss = sum(loss_dict.values())
        # All ranks must agree to skip, or DDP would wait forever for the skipped gradients.
        finite = self.trainer.strategy.reduce_boolean_decision(bool(torch.isfinite(loss)), all=True)
        if not finite:
            return self._skip_nonfinite(loss_dict)
        self.nonfinite_in_a_row = 0
        batch_size = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        # The logger keeps only every log_every_n_steps-th step value, and each self.log costs
        # about a millisecond of host time: log the terms only on the steps that are kept
        # (the Trainer's own test, with global_step standing for its stepped-batch count).
        every = self.trainer.log_every_n_steps
        if every and (self.global_step + 1) % every == 0:
            for name, value in loss_dict.items():
                self.log(f"train/{name}", value, batch_size=batch_size)
        return loss

    def _skip_nonfinite(self, loss_dict: dict[str, Tensor]) -> None:
        self.nonfinite_in_a_row += 1
        self.nonfinite_total += 1
        terms = ", ".join(f"{k}={v.item():.4g}" for k, v in loss_dict.items())
        log.warning(
            "non-finite loss at step %d (%s): step skipped (%d in a row, %d in all)",
            self.global_step,
            terms,
            self.nonfinite_in_a_row,
            self.nonfinite_total,
        )
        self.log("train/nonfinite_steps", float(self.nonfinite_total))
        if self.nonfinite_in_a_row >= self.optimization.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self.nonfinite_in_a_row} non-finite losses in a row at step {self.global_step}: "
                "lower the learning rate, lengthen warmup, enable gradient clipping or check the boxes"
            )
        return None

    # -------------------------------------------------------------- evaluation
    def _ground_truth(self, stage: str) -> dict[str, Any]:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "ground_truth"):
            return datamodule.ground_truth(stage)
        loaders = self.trainer.val_dataloaders if stage == "val" else self.trainer.test_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        return loader.dataset.ground_truth

    def _start_evaluation(self, stage: str) -> None:
        from detection.evaluation.evaluator import DetectionEvaluator

        options = self.evaluation
        self.evaluator = DetectionEvaluator(
            self._ground_truth(stage),
            backend=options.eval_backend,
            area_ranges=options.area_ranges,
            iou_threshold=options.iou_threshold,
            score_threshold=options.score_threshold,
            target_recall=options.target_recall,
        )

    def _evaluation_step(self, batch: Batch) -> None:
        from detection.training.checkpoint_eval import process_batch

        images, targets = batch
        process_batch(
            self.model, as_float_images(images), targets, self.evaluator, self.meta.category_ids
        )

    def _finish_evaluation(self, stage: str) -> dict[str, Any]:
        # Kept with its curves for callbacks (TensorBoard draws the PR curves from it).
        self.last_evaluation = self.evaluator.evaluation()
        self.evaluator = None
        report = self.last_evaluation.report
        metrics = {
            "mAP": report["AP"],
            **{k: report[k] for k in ("AP50", "AP75", "APs", "APm", "APl", "AR100")},
        }
        overall = report["operating_point"]["overall"]
        metrics.update(
            {"precision": overall["precision"], "recall": overall["recall"], "f1": overall["f1"]}
        )
        # Every rank already holds the gathered, de-duplicated numbers: no further reduction.
        self.log_dict({f"{stage}/{k}": float(v) for k, v in metrics.items()}, sync_dist=False)
        return report

    def on_validation_epoch_start(self) -> None:
        self._start_evaluation("val")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        report = self._finish_evaluation("val")
        if not self.trainer.sanity_checking:
            # Thresholds travel with the checkpoint written after this validation, so the best
            # checkpoint carries the thresholds calibrated on its own validation.
            self.meta.thresholds = self.meta.thresholds.updated(report["calibrated_thresholds"])

    def on_test_epoch_start(self) -> None:
        self._start_evaluation("test")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch)

    def on_test_epoch_end(self) -> None:
        report = self._finish_evaluation("test")
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir is not None:
            from detection.evaluation.report import write_metrics_json

            path = write_metrics_json(report, Path(log_dir) / "test_metrics.json")
            log.info("test metrics written to %s", path)

    # ------------------------------------------------------------- prediction
    def on_predict_epoch_start(self) -> None:
        self.predictions: list[dict[str, Any]] = []

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Any]]:
        """COCO result records of a batch (boxes xywh in each image's pixels), one per box; a
        folder's images also name their file (``file_name``)."""
        from detection.core.coco_format import output_results

        images, targets = batch
        records = []
        for output, target in zip(self(images), targets, strict=True):
            found = output_results(int(target["image_id"]), output, self.meta.category_ids)
            name = target.get("file_name")
            records += [{**r, "file_name": name} for r in found] if name else found
        self.predictions += records
        return records

    def on_predict_epoch_end(self) -> None:
        """Write every rank's records as ``coco_results.json`` in the run's log folder."""
        import json

        from detection.core.run_folder import write_atomic

        records = self.predictions
        if self.trainer.world_size > 1:
            parts: list[Any] = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(parts, records)
            records = [r for part in parts for r in part]
        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir)
        if self.trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            records.sort(key=lambda r: (r["image_id"], -r["score"]))
            write_atomic(folder / "coco_results.json", json.dumps(records) + "\n")
            log.info("%d detections written to %s", len(records), folder / "coco_results.json")

    # ------------------------------------------------------------ optimization
    def configure_optimizers(self) -> dict[str, Any]:
        """The optimizer and per-step schedule for the Trainer's run (see `optimizers_for`)."""
        max_epochs = self.trainer.max_epochs
        return self.optimizers_for(
            max(1, int(self.trainer.estimated_stepping_batches)),
            max_epochs if max_epochs and max_epochs > 0 else None,
        )

    def optimizers_for(self, total_steps: int, max_epochs: int | None = None) -> dict[str, Any]:
        """The optimizer (``optimization.optimizer``: sgd or adamw) over the trainable parameters
        and its warmup + ``optimization.scheduler`` LambdaLR stepped every optimizer step, for a
        run of `total_steps`.

        Args:
            total_steps: optimizer steps of the whole run (the cosine schedule's length).
            max_epochs: epochs of the run, needed to turn milestones in epochs into steps.

        Returns:
            Lightning's ``{"optimizer": ..., "lr_scheduler": {"scheduler": ..., "interval":
            "step"}}``; loops without a Trainer (scripts/bench_train.py) step both themselves.

        Raises:
            ValueError: an unknown optimizer, or milestones in epochs without `max_epochs`.
        """
        hp = self.optimization
        params = [p for p in self.model.parameters() if p.requires_grad]
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay
            )
        elif hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            raise ValueError(f"optimizer must be sgd or adamw, got '{hp.optimizer}'")
        milestones = list(hp.milestones or [])
        if hp.milestones_unit == "epoch" and milestones:
            if max_epochs is None:
                raise ValueError(
                    "milestones in epochs need trainer.max_epochs; use "
                    "optimization.milestones_unit: step"
                )
            steps_per_epoch = total_steps / max_epochs
            milestones = [round(m * steps_per_epoch) for m in milestones]
        factor = lr_factor(
            warmup_iters=hp.warmup_iters,
            warmup_factor=hp.warmup_factor,
            kind=hp.scheduler,
            total_steps=total_steps,
            milestones=milestones,
            gamma=hp.gamma,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.meta.to_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if CHECKPOINT_KEY in checkpoint:
            self.meta.thresholds = CheckpointMeta.from_dict(checkpoint[CHECKPOINT_KEY]).thresholds
