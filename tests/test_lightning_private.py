"""The private Lightning attributes of detection/core/lightning_private.py still exist and work.

When a Lightning release moves one, this file fails first, naming it; the rest of the package
never names a private Lightning attribute (checked here too).
"""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from detection.core import lightning_private
from detection.core.lightning_private import (
    CHECKED_AGAINST,
    LightningPrivateAPIError,
    dump_checkpoint,
    is_dataloader_shuffled,
    replace_dunder_methods,
    update_dataloader,
    uses_distributed_sampler,
)

ROOT = Path(__file__).resolve().parent.parent


class Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)


def test_checked_against_the_installed_lightning_release_series() -> None:
    # A newer minor release is allowed; the tests below say whether the attributes survived.
    installed = tuple(int(p) for p in L.__version__.split(".")[:2])
    assert installed >= tuple(int(p) for p in CHECKED_AGAINST.split(".")[:2])


def test_dump_checkpoint_gives_the_checkpoint_dict(tmp_path: Path) -> None:
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(Tiny())
    state = dump_checkpoint(trainer)
    assert set(state["state_dict"]) == {"layer.weight", "layer.bias"}
    assert {"epoch", "global_step", "pytorch-lightning_version"} <= set(state)


@pytest.mark.parametrize("flag", [True, False])
def test_uses_distributed_sampler_reads_the_trainer_argument(flag: bool, tmp_path: Path) -> None:
    trainer = L.Trainer(default_root_dir=tmp_path, logger=False, use_distributed_sampler=flag)
    assert uses_distributed_sampler(trainer) is flag


def test_dataloader_helpers_rebuild_a_loader_around_another_sampler() -> None:
    # tests/test_data_samplers.py runs them on the data module's grouped batch sampler.
    data = list(range(10))
    with replace_dunder_methods(BatchSampler):
        shuffled = DataLoader(data, batch_size=3, shuffle=True)
    assert is_dataloader_shuffled(shuffled)
    assert not is_dataloader_shuffled(DataLoader(data, batch_size=3))
    sampler = SequentialSampler(data)
    rebuilt = update_dataloader(shuffled, sampler)
    assert rebuilt.sampler is sampler
    assert [b.tolist() for b in rebuilt] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]


def test_a_moved_attribute_fails_loudly_naming_it() -> None:
    with pytest.raises(LightningPrivateAPIError, match=r"object\._checkpoint_connector is missing"):
        dump_checkpoint(object())


def test_no_private_lightning_attribute_outside_the_adapter() -> None:
    names = set(re.findall(r'"(_[a-z_]+)"', (ROOT / lightning_private.__file__).read_text()))
    names |= {"_instantiate_trainer", "_parse_ckpt_path"}  # LightningCLI's, public hooks serve
    assert "_checkpoint_connector" in names
    pattern = re.compile(r"\b(" + "|".join(sorted(names)) + r")\b")
    adapter = Path(lightning_private.__file__).resolve()
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("detection", "tests", "scripts")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.resolve() not in (adapter, Path(__file__).resolve())
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if pattern.search(line)
    ]
    assert offenders == []
