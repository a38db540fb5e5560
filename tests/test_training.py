"""DetectionModule and `detection fit`: checkpoints, resume, skipped non-finite steps, schedule."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

from detection.cli import main
from detection.data.datamodule import CocoDataModule
from detection.evaluation.coco import METRIC_KEYS
from detection.models.checkpoint import load_model, read_checkpoint
from detection.training.lr_schedule import lr_factor
from detection.training.module import DetectionModule, NonFiniteLossError
from detection.training.options import OptimizationOptions

TINY_MODEL = {
    "model_name": "fasterrcnn_resnet18_fpn",
    "min_size": 64,
    "max_size": 64,
    "model_kwargs": {"box_batch_size_per_image": 32, "rpn_post_nms_top_n_train": 100},
}


def train_split(data: dict[str, Path]) -> dict[str, str]:
    return {
        "train_annotations": str(data["train"]),
        "train_images": str(data["train"].parent.parent / "images"),
    }


def fit_args(data: dict[str, Path], root: Path, *extra: str) -> list[str]:
    images = data["train"].parent.parent / "images"
    return [
        "fit",
        "--config", "configs/cpu_quick.yaml",
        f"--data.train_annotations={data['train']}", f"--data.train_images={images}",
        f"--data.val_annotations={data['val']}", f"--data.val_images={images}",
        "--data.test_annotations=null", "--data.test_images=null", "--data.batch_size=2", "--data.num_workers=0",
        "--model.min_size=64", "--model.max_size=64",
        f"--trainer.default_root_dir={root}", "--trainer.max_epochs=-1",
        "--trainer.val_check_interval=3", "--trainer.check_val_every_n_epoch=null",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={root}",
        *extra,
    ]  # fmt: skip


LOSS_TERMS = ("loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg")


def logged_rows(root: Path) -> list[dict[str, str]]:
    """The metrics.csv rows of training steps (those with train/loss), by step."""
    rows = []
    for path in root.glob("lightning_logs/version_*/metrics.csv"):
        with path.open() as f:
            rows += [row for row in csv.DictReader(f) if row.get("train/loss")]
    return sorted(rows, key=lambda row: int(row["step"]))


def logged_steps(root: Path) -> list[int]:
    return [int(row["step"]) for row in logged_rows(root)]


def assert_loss_terms_on_every_logged_step(root: Path) -> None:
    rows = logged_rows(root)
    assert rows
    for row in rows:
        assert all(row.get(f"train/{term}") for term in LOSS_TERMS), row


def test_fit_writes_checkpoint_and_resume_continues_from_its_step(
    tiny_data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = tmp_path / "first"
    assert main(fit_args(tiny_data, first, "--trainer.max_steps=3")) == 0
    checkpoints = sorted(first.rglob("*.ckpt"))
    last = next(p for p in checkpoints if p.name == "last.ckpt")
    assert any(p.name.startswith("best-") for p in checkpoints)
    meta, state = read_checkpoint(last)
    assert meta.class_names == ["scratch", "spot", "crack", "dent"]
    assert meta.category_ids == [1, 2, 3, 4]
    assert set(meta.thresholds.per_class) == set(meta.class_names)  # calibrated
    assert torch.load(last, weights_only=True)["global_step"] == 3
    model, _ = load_model(last)  # rebuilds without the package's training code
    assert not model.training and state
    assert logged_steps(first) == [0, 1, 2]
    assert_loss_terms_on_every_logged_step(first)

    second = tmp_path / "second"
    resumed = fit_args(tiny_data, second, "--trainer.max_steps=5", f"--ckpt_path={last}",
                       "--trainer.log_every_n_steps=2", "--model.optimization.lr=0.001", "--model.evaluation.score_threshold=0.3")  # fmt: skip
    capsys.readouterr()
    assert main(resumed) == 0
    # Lightning rebuilds the model from the checkpoint's settings: a training setting given
    # now is noted as ignored, an evaluation setting is taken.
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: --model.optimization.lr 0.001 is ignored: {last} was trained with 0.01, "
        "and Lightning rebuilds the model with it"
    ]
    saved = torch.load(next(second.rglob("last.ckpt")), weights_only=True)["hyper_parameters"]
    assert (saved["optimization"]["lr"], saved["evaluation"]["score_threshold"]) == (0.01, 0.3)
    # Steps 3 and 4 are new, 0-2 not; with log_every_n_steps 2 the logger keeps step 3 (its
    # 4th batch), and the loss terms, logged only on kept steps, are there.
    assert logged_steps(second) == [3]
    assert_loss_terms_on_every_logged_step(second)
    assert torch.load(next(second.rglob("last.ckpt")), weights_only=True)["global_step"] == 5

    # `detection test` scores the checkpoint on a held-out split and writes the full report.
    tested = tmp_path / "tested"
    images = tiny_data["test"].parent.parent / "images"
    args = fit_args(tiny_data, tested, f"--ckpt_path={last}", f"--data.test_annotations={tiny_data['test']}",
                    f"--data.test_images={images}")  # fmt: skip
    assert main(["test", *args[1:]]) == 0
    report = json.loads(next(tested.rglob("test_metrics.json")).read_text())
    assert list(report)[:12] == list(METRIC_KEYS)
    assert {"per_class", "operating_point", "image_level", "calibrated_thresholds"} <= set(report)


def test_print_config_shows_the_whole_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/cpu_quick.yaml", "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for key in (
        "model_name: fasterrcnn_resnet18_fpn",
        "lr: 0.01",
        "train_annotations:",
        "monitor: val/mAP",
    ):
        assert key in printed


def test_bad_data_path_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.json"
    code = main(
        ["fit", "--config", "configs/cpu_quick.yaml", f"--data.train_annotations={missing}"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert f"error: {missing}: file not found" in err.splitlines()


class NaNLoss(torch.nn.Module):
    """Wraps a detector so that chosen training calls return a NaN loss."""

    def __init__(self, model: torch.nn.Module, nan_calls: set[int]) -> None:
        super().__init__()
        self.model, self.nan_calls, self.calls = model, nan_calls, 0

    def forward(self, images, targets=None):  # noqa: ANN001, ANN201 - mirrors torchvision
        out = self.model(images, targets)
        if self.training:
            self.calls += 1
            if self.calls in self.nan_calls:
                out = {k: v * float("nan") for k, v in out.items()}
        return out


def tiny_module(**overrides: object) -> DetectionModule:
    """A 4-class module; `overrides` are `OptimizationOptions` fields."""
    settings = {"lr": 0.001, "warmup_iters": 0, "milestones_unit": "step", **overrides}
    return DetectionModule(
        **TINY_MODEL, num_classes=4, optimization=OptimizationOptions(**settings)
    )


def trainer(root: Path, max_steps: int) -> L.Trainer:
    return L.Trainer(
        default_root_dir=root, max_steps=max_steps, accelerator="cpu", limit_val_batches=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
    )  # fmt: skip


def test_non_finite_loss_skips_the_step(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    data = CocoDataModule(**train_split(tiny_data), batch_size=2, num_workers=0)
    module = tiny_module()
    module.model = NaNLoss(module.model, nan_calls={2})
    seen: list[dict[str, torch.Tensor]] = []

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # noqa: ANN001
            # Parameters only: batch-norm statistics move in any training forward pass.
            seen.append(
                {k: v.detach().clone() for k, v in pl_module.model.model.named_parameters()}
            )

    run = trainer(tmp_path, max_steps=3)
    run.callbacks.append(Snapshot())
    run.fit(module, datamodule=data)
    assert module.nonfinite_total == 1
    # The NaN batch (the second) left every weight as the first step had set it.
    assert all(torch.equal(seen[0][k], seen[1][k]) for k in seen[0])
    assert not all(torch.equal(seen[1][k], seen[2][k]) for k in seen[1])
    assert all(torch.isfinite(v).all() for v in seen[2].values())


def test_non_finite_losses_in_a_row_stop_the_run(
    tiny_data: dict[str, Path], tmp_path: Path
) -> None:
    data = CocoDataModule(**train_split(tiny_data), batch_size=2, num_workers=0)
    module = tiny_module(max_nonfinite_steps=3)
    module.model = NaNLoss(module.model, nan_calls={2, 3, 4, 5, 6})
    with pytest.raises(NonFiniteLossError, match="3 non-finite losses in a row"):
        trainer(tmp_path, max_steps=10).fit(module, datamodule=data)


def test_warmup_then_multistep() -> None:
    f = lr_factor(
        warmup_iters=10,
        warmup_factor=0.001,
        kind="multistep",
        total_steps=100,
        milestones=[50, 80],
        gamma=0.1,
    )
    assert f(0) == pytest.approx(0.001)
    assert f(5) == pytest.approx(0.001 * 0.5 + 0.5)
    assert f(10) == f(49) == 1.0
    assert f(50) == pytest.approx(0.1) and f(79) == pytest.approx(0.1)
    assert f(80) == pytest.approx(0.01)


def test_warmup_then_cosine() -> None:
    f = lr_factor(warmup_iters=4, warmup_factor=0.25, kind="cosine", total_steps=100)
    assert f(0) == pytest.approx(0.25 * math.cos(0) ** 2)
    assert f(50) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0, abs=1e-12)


def test_epoch_milestones_become_steps(tiny_data: dict[str, Path], tmp_path: Path) -> None:
    data = CocoDataModule(**train_split(tiny_data), batch_size=2, num_workers=0,
                          aspect_ratio_group_factor=-1)  # fmt: skip
    module = tiny_module(milestones=[1], milestones_unit="epoch", lr=0.01, gamma=0.5)
    run = L.Trainer(max_epochs=2, accelerator="cpu", limit_val_batches=0, logger=False,
                    enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path)  # fmt: skip
    run.fit(module, datamodule=data)
    steps_per_epoch = math.ceil(len(data.datasets["train"]) / 2)
    assert run.global_step == 2 * steps_per_epoch
    assert run.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.005)
