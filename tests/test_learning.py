"""The training loop learns: a few tiny generated images, fitted from random initialisation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from detection.data.datamodule import CocoDataModule
from detection.data.synthetic import generate_dataset
from detection.training.checkpoint_eval import evaluate_checkpoint
from detection.training.module import DetectionModule
from detection.training.options import OptimizationOptions


@pytest.mark.slow
def test_fits_six_tiny_images_to_map50_above_0_9(tmp_path: Path) -> None:
    L.seed_everything(0)
    # Five defective images and one defect-free one: negatives are kept and trained on.
    paths = generate_dataset(
        tmp_path,
        num_images=6,
        image_size=96,
        seed=11,
        splits={"train": 1.0},
        negative_fraction=1 / 6,
    )
    images = str(tmp_path / "images")
    train = str(paths["train"])
    data = CocoDataModule(
        train_annotations=train, train_images=images, val_annotations=train, val_images=images,
        batch_size=2, eval_batch_size=6, num_workers=0, aspect_ratio_group_factor=-1,
        train_transforms=[{"name": "HorizontalFlip", "p": 0.5}],
    )  # fmt: skip
    assert len(data.ground_truth("train")["annotations"]) >= 5
    module = DetectionModule(
        model_name="fasterrcnn_resnet18_fpn",
        class_names=data.class_names,
        category_ids=data.category_ids,
        min_size=96,
        max_size=96,
        model_kwargs={"box_batch_size_per_image": 64, "rpn_post_nms_top_n_train": 300},
        optimization=OptimizationOptions(
            lr=0.01, scheduler="cosine", warmup_iters=30, warmup_factor=0.01
        ),
    )
    trainer = L.Trainer(
        accelerator="cpu", max_steps=240, gradient_clip_val=10.0, check_val_every_n_epoch=10_000,
        num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    checkpoint = tmp_path / "fitted.ckpt"
    trainer.save_checkpoint(checkpoint)
    report = evaluate_checkpoint(checkpoint, train, images, thresholds=0.5, batch_size=6).report
    assert report["AP50"] >= 0.9, report["AP50"]
    # The defect-free image passes at a 0.5 threshold: negatives were learned too.
    assert report["image_level"]["false_reject_rate"] == 0.0, report["image_level"]
