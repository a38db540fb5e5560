"""The private Lightning attributes this package uses, each where Lightning has no public API.

Checked against lightning 2.6.6 (`CHECKED_AGAINST`); tests/test_lightning_private.py fails when
one moves. Nothing else in the package or its tests names a private Lightning attribute: a new
need goes here, with the reason no public API serves. In the bottom layer because the data
module and the training code both need it; Lightning is imported only inside the functions.
"""

from __future__ import annotations

from typing import Any

from detection.core.errors import DetectionError

CHECKED_AGAINST = "2.6.6"


class LightningPrivateAPIError(DetectionError):
    """A private Lightning attribute this package relies on is gone or renamed."""


def _attribute(owner: Any, name: str) -> Any:
    try:
        return getattr(owner, name)
    except AttributeError:
        import lightning

        raise LightningPrivateAPIError(
            f"{type(owner).__name__}.{name} is missing in lightning {lightning.__version__} "
            f"(detection was checked against {CHECKED_AGAINST}): see detection/core/lightning_private.py"
        ) from None


def dump_checkpoint(trainer: Any, weights_only: bool = False) -> dict[str, Any]:
    """The checkpoint dict `trainer.save_checkpoint` would write, without writing it.

    No public API: `Trainer.save_checkpoint` also writes the file and waits at a barrier for
    every rank, which a rank that failed alone must not do.

    Raises:
        LightningPrivateAPIError: `Trainer._checkpoint_connector` moved.
    """
    connector = _attribute(trainer, "_checkpoint_connector")
    return _attribute(connector, "dump_checkpoint")(weights_only=weights_only)


def uses_distributed_sampler(trainer: Any) -> bool:
    """The Trainer's `use_distributed_sampler` argument (it stores it nowhere public).

    Raises:
        LightningPrivateAPIError: `Trainer._accelerator_connector` moved.
    """
    connector = _attribute(trainer, "_accelerator_connector")
    return bool(_attribute(connector, "use_distributed_sampler"))


def replace_dunder_methods(cls: type) -> Any:
    """Lightning's context that records a class's constructor arguments (tests re-create
    loaders the way Lightning's data connector does)."""
    from lightning.fabric.utilities import data

    return _attribute(data, "_replace_dunder_methods")(cls)


def is_dataloader_shuffled(loader: Any) -> bool:
    """Whether Lightning considers `loader` shuffled (its DistributedSampler then shuffles)."""
    from lightning.pytorch.utilities import data

    return bool(_attribute(data, "_is_dataloader_shuffled")(loader))


def update_dataloader(loader: Any, sampler: Any) -> Any:
    """`loader` re-created around `sampler`, as Lightning does to inject its DistributedSampler."""
    from lightning.pytorch.utilities import data

    return _attribute(data, "_update_dataloader")(loader, sampler)
