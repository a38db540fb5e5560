"""Keep the work: a fit that dies after training started leaves a last.ckpt to resume from."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from detection.core.errors import first_line
from detection.core.lightning_private import dump_checkpoint
from detection.core.run_folder import temporary_path

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
        self.not_saved: str | None = None  # why saving failed, when it did
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
            state = dump_checkpoint(trainer, weights_only=False)
            if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
                if trainer.is_global_zero:
                    _save_atomic(state, path)
            else:  # a strategy with its own checkpoint format (sharded) writes it its own way
                trainer.strategy.save_checkpoint(state, path)
        except Exception as error:  # noqa: BLE001 - the original failure is the one to report
            reason = error.strerror if isinstance(error, OSError) and error.strerror else None
            self.not_saved = (
                f"the training state could not be saved to {path} ({reason or first_line(error)})"
            )
            log.warning("%s", self.not_saved)
            return
        self.saved = path
        log.warning(
            "training stopped at step %d; its state is saved in %s", trainer.global_step, path
        )

    def resume_hint(self) -> str:
        """A sentence on how to resume, why the state could not be saved, or ''."""
        if self.saved is None:
            return f"; {self.not_saved}" if self.not_saved else ""
        return f"; the training state is saved: resume with --ckpt_path {self.saved}"


def _save_atomic(state: dict, path: Path) -> None:
    """torch.save through a sibling temporary file: last.ckpt is whole or untouched, and no
    temporary file is left when the disk refuses (Lightning's own save leaves one in /tmp)."""
    tmp = temporary_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
