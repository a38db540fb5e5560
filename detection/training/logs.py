"""Where training runs log: TensorBoard and CSV side by side in the run folder, quietly.

    ROOT/NAME/version_N/events.out.tfevents.*   loss terms, lr, every validation metric, and the
                                                PR curves as an image at each validation
    ROOT/NAME/version_N/metrics.csv             the same scalars as CSV
    ROOT/NAME/version_N/checkpoints/            (ModelCheckpoint's default folder)

`tensorboard --logdir ROOT` shows the curves.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

# Lightning's advertisements for its cloud services, printed at every Trainer start.
PROMOTIONS = ("litlogger", "litmodels", "Lightning Experiments", "Lightning model registry")
# Known-harmless warnings from dependencies that would bury our own messages.
HARMLESS_WARNINGS = (
    # The CSV logger shares TensorBoard's version folder on purpose (it only replaces its own file).
    r"Experiment logs directory .* exists and is not empty.*",
    # Lightning's own use of a torch API that torch deprecated; nothing a user can change.
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
)


def training_loggers(root: str | Path, name: str = "lightning_logs") -> list[Logger]:
    """TensorBoard first (its folder holds the checkpoints), then CSV in the same version folder."""
    tensorboard = TensorBoardLogger(root, name=name, default_hp_metric=False)
    return [tensorboard, CSVLogger(root, name=name, version=tensorboard.version)]


class PRCurveImages(Callback):
    """After each validation, draws the PR curves into TensorBoard as image `val/pr_curves`."""

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        evaluation = getattr(pl_module, "last_evaluation", None)
        if trainer.sanity_checking or not trainer.is_global_zero or evaluation is None:
            return
        from detection.evaluation.plots import operating_point, pr_curves_figure

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                figure = pr_curves_figure(evaluation.curves, *operating_point(evaluation.report))
                logger.experiment.add_figure("val/pr_curves", figure, trainer.global_step)


class _NoPromotions(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(word in record.getMessage() for word in PROMOTIONS)


def quiet_dependencies() -> None:
    """Drop Lightning's cloud-service tips and the known-harmless dependency warnings."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoPromotions) for f in log.filters):
            log.addFilter(_NoPromotions())
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


def default_logger(config: dict[str, Any]) -> Any:
    """The Trainer's `logger` setting with `True`/unset replaced by `training_loggers`."""
    logger = config.get("logger")
    if logger is None or logger is True:
        return training_loggers(config.get("default_root_dir") or Path.cwd())
    return logger
