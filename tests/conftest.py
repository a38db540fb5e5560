"""Shared pytest set-up (quiet, deterministic, CPU-friendly) and the fixtures tests share."""

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from square_model import trained_checkpoint  # noqa: E402

# CI has two cores: more threads than that only adds contention. On a machine busy with other
# work, OMP_NUM_THREADS=1 avoids OpenMP barrier stalls (an explicit setting wins).
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def square_checkpoint(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Path of the trained square detector's checkpoint (cached across test runs)."""
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    folder = cache.mkdir("detection-inference") if cache else tmp_path_factory.mktemp("model")
    return trained_checkpoint(Path(folder))


@pytest.fixture(scope="module")
def module_folder(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A folder for the files a test module's fixtures share, removed after the module when its
    tests passed (kept after a failure, like pytest's own `tmp_path_retention_policy`).

    The suite writes about 11 GB if nothing is removed before its end (checkpoints of 108 MB
    copied into many tests); CI's disk filled with that. Function folders go after each test
    (pyproject's retention policy), module folders here.
    """
    failed_before = request.session.testsfailed
    folder = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield folder
    if request.session.testsfailed == failed_before:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """Run a test module with one torch thread, then restore the setting.

    Inference test modules use it (``pytestmark``). On two cores shared with other jobs, a second
    OpenMP thread mostly spins waiting: one Detector call measured 2.3 s with two threads and
    0.18 s with one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Ten generated 64-pixel images in train/val/test splits: paths of the three jsons."""
    from detection.data.synthetic import generate_dataset

    return generate_dataset(
        tmp_path_factory.mktemp("synthetic"), num_images=10, image_size=64, seed=3
    )


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight generated 64-pixel images and their jsons, for the bad-input tests to copy."""
    from detection.data.synthetic import generate_dataset

    out = tmp_path_factory.mktemp("synthetic")
    generate_dataset(out, num_images=8, image_size=64, seed=3)
    return out


@pytest.fixture
def data(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny dataset, free to break."""
    return Path(shutil.copytree(pristine, tmp_path / "data"))
