"""Keep the work: a fit that dies after training started leaves a last.ckpt to resume from."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class FailureCheckpoint(Callback):
    """On any exception in fit (an error, Ctrl-C, SIGTERM) after the first optimizer step, save
    the full training state as the ModelCheckpoint's last.ckpt, so `--ckpt_path` resumes it.

    Works on every supported Lightning (ModelCheckpoint's own save_on_exception came later and
    names the file like a best checkpoint). Records why the run stopped in ``stopped_by``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.saved: Path | None = None
        self.stopped_by: str | None = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """Save last.ckpt when training has progressed; note an interrupt or SIGTERM."""
        if isinstance(exception, SIGTERMException):
            self.stopped_by = "stopped by SIGTERM"
        elif isinstance(exception, KeyboardInterrupt):
            self.stopped_by = "interrupted"
        checkpoint = trainer.checkpoint_callback
        if (
            trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
            or trainer.global_step == 0
            or not isinstance(checkpoint, ModelCheckpoint)
            or checkpoint.dirpath is None
        ):
            return
        path = (
            Path(checkpoint.dirpath)
            / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        )
        try:
            # Not trainer.save_checkpoint: its barrier would wait for ranks that did not fail.
            state = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
            trainer.strategy.save_checkpoint(state, path)
        except Exception as error:  # noqa: BLE001 - the original failure is the one to report
            log.warning("could not save the training state to %s: %s", path, error)
            return
        self.saved = path
        log.warning(
            "training stopped at step %d; its state is saved in %s", trainer.global_step, path
        )

    def resume_hint(self) -> str:
        """A sentence on how to resume, or '' when nothing was saved."""
        if self.saved is None:
            return ""
        return f"; the training state is saved: resume with --ckpt_path {self.saved}"
