"""The Trainer set-up every training run shares: `detection fit/validate/test` and the demo."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor

from detection.training.failure_checkpoint import FailureCheckpoint
from detection.training.logs import PRCurveImages, default_logger

# ModelCheckpoint of every run (`--checkpoint.*` in the CLI): the best by val/mAP, and the last.
CHECKPOINT_DEFAULTS = {
    "monitor": "val/mAP",
    "mode": "max",
    "save_last": True,
    "filename": "best-epoch{epoch:03d}-step{step:06d}",
    "auto_insert_metric_name": False,
}


def trainer_arguments(config: dict[str, Any], failure: FailureCheckpoint) -> dict[str, Any]:
    """Trainer keyword arguments `config` as every training run has them: TensorBoard + CSV logs
    in the run folder unless it names a logger (or false), and its callbacks plus the learning
    rate at every step (when logged), the PR curves image and `failure` (last.ckpt on death)."""
    logger = default_logger(config)
    callbacks = config.get("callbacks") or []
    callbacks = list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    if logger is not False and logger != []:  # the monitor refuses to start without a logger
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    return {**config, "logger": logger, "callbacks": [*callbacks, PRCurveImages(), failure]}
