"""inference/batches.py: on CPU each DataLoader worker decodes and runs a single-threaded model."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from detection.inspect.batches import BatchInspector, inspected_batches


class WhereDetector:
    """Records, per image, the process and the torch thread count the model ran with."""

    device = torch.device("cpu")
    runs_in_forked_workers = True

    def predict_tensors(self, images, names, batch_size):
        return [
            SimpleNamespace(
                passed=True, name=name, pid=os.getpid(), threads=torch.get_num_threads()
            )
            for name in names
        ]


@pytest.fixture
def paths(tmp_path: Path) -> list[str]:
    written = []
    for i in range(5):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), np.full((8, 8, 3), i, dtype=np.uint8))
        written.append(str(path))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    return [*written[:2], str(tmp_path / "bad.png"), *written[2:]]


def test_cpu_workers_run_the_model_single_threaded_in_order(paths: list[str]) -> None:
    inspector = BatchInspector(WhereDetector(), batch_size=2, drawn_dir=None)
    batches = list(inspected_batches(paths, inspector, workers=2, max_pixels=None))
    predictions = [p for batch in batches for p in batch.predictions]
    assert [p.name for p in predictions] == [p for p in paths if not p.endswith("bad.png")]
    assert all(p.pid != os.getpid() and p.threads == 1 for p in predictions)
    assert len({p.pid for p in predictions}) == 2  # both workers took batches
    (bad,) = [b for batch in batches for b in batch.bad]
    assert bad["path"].endswith("bad.png") and bad["error"]
    assert [len(batch) for batch in batches] == [2, 2, 2]


def test_without_workers_the_model_runs_in_this_process(paths: list[str]) -> None:
    inspector = BatchInspector(WhereDetector(), batch_size=4, drawn_dir=None)
    batches = list(inspected_batches(paths, inspector, workers=0, max_pixels=None))
    assert {p.pid for batch in batches for p in batch.predictions} == {os.getpid()}
    assert [len(batch) for batch in batches] == [4, 2]


def _death_signal() -> int:
    """This process's parent-death signal (prctl PR_GET_PDEATHSIG; Linux)."""
    value = ctypes.c_int(-1)
    assert ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0) == 0  # PR_GET_PDEATHSIG
    return value.value


class DeathSignalDetector(WhereDetector):
    """Records, per image, the signal the kernel sends its process when the parent dies."""

    def predict_tensors(self, images, names, batch_size):
        return [SimpleNamespace(passed=True, signal=_death_signal()) for _ in names]


def test_workers_are_killed_by_the_kernel_when_the_job_dies(paths: list[str]) -> None:
    inspector = BatchInspector(DeathSignalDetector(), batch_size=2, drawn_dir=None)
    batches = list(inspected_batches(paths, inspector, workers=2, max_pixels=None))
    signals = {p.signal for batch in batches for p in batch.predictions}
    assert signals == {signal.SIGKILL}
