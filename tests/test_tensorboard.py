"""`detection fit` logs to TensorBoard (and CSV) under the run folder, without Lightning's tips."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_training import LOSS_TERMS, fit_args

from detection.cli import main


def test_fit_writes_tensorboard_events_with_every_validation_metric(
    tmp_path: Path,
    tiny_data: dict[str, Path],
    capfd: pytest.CaptureFixture,
) -> None:
    # The default logger: no --trainer.logger given.
    args = [a for a in fit_args(tiny_data, tmp_path) if not a.startswith("--trainer.logger")]
    assert main([*args, "--trainer.max_steps=4", "--trainer.val_check_interval=2"]) == 0
    output = capfd.readouterr()
    for word in ("litlogger", "litmodels", "Tip:", "exists and is not empty", "LeafSpec"):
        assert word not in output.out + output.err

    (run,) = (tmp_path / "lightning_logs").glob("version_*")
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    with (run / "metrics.csv").open() as f:
        columns = set(csv.DictReader(f).fieldnames or [])
    validation = {c for c in columns if c.startswith("val/")}
    assert "val/mAP" in validation and "val/f1" in validation
    assert validation <= scalars  # every validation metric, as in the CSV next to it
    assert {f"train/{term}" for term in LOSS_TERMS} <= scalars
    assert any(tag.startswith("lr-") for tag in scalars)
    assert len(events.Scalars("val/mAP")) == 2  # validations at steps 2 and 4
    pr = events.Images("val/pr_curves")  # an image at each validation
    assert len(pr) == 2 and all(e.width > 100 and e.height > 100 for e in pr)
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))[-1] == "last.ckpt"
