"""What the bad-input tests of the CLI share: the arguments of a two-step fit on the tiny
dataset of the `data` fixture (conftest.py), and the check that stderr holds one error line."""

from __future__ import annotations

from pathlib import Path

import pytest

from detection.cli import main


def fit_args(data: Path, root: Path, *extra: str, command: str = "fit") -> list[str]:
    images, ann = data / "images", data / "annotations"
    return [
        command,
        "--config", "configs/cpu_quick.yaml",
        f"--data.train_annotations={ann / 'train.json'}", f"--data.train_images={images}",
        f"--data.val_annotations={ann / 'val.json'}", f"--data.val_images={images}",
        f"--data.test_annotations={ann / 'test.json'}", f"--data.test_images={images}",
        "--data.batch_size=2", "--data.num_workers=0",
        "--model.min_size=64", "--model.max_size=64",
        f"--trainer.default_root_dir={root}", "--trainer.max_epochs=-1", "--trainer.max_steps=2",
        "--trainer.check_val_every_n_epoch=null", "--trainer.val_check_interval=2",
        "--trainer.log_every_n_steps=1", "--trainer.enable_progress_bar=false",
        "--trainer.logger=CSVLogger", f"--trainer.logger.save_dir={root}",
        *extra,
    ]  # fmt: skip


def error_line(err: str, *parts: str) -> str:
    """The one `error:` line of stderr, checked to name every part; no traceback anywhere."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err
