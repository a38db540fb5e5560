"""The settings of one inspection job: what `detection inspect` parses and the Detector runs with.

The command line's options are named after these fields (`--batch-size` sets `batch_size`), so a
parsed namespace becomes an InspectConfig without listing them again, and the fields marked
``detector`` are the Detector's own keyword arguments.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import torch

from detection.core.images import MAX_PIXELS
from detection.core.thresholds import REPORT_DEFAULT, Thresholds, ThresholdsLike
from detection.inference.predictor import Detector

# Marks the fields that are keyword arguments of Detector.from_checkpoint.
DETECTOR = {"detector": True}


def _detector(default: Any) -> Any:
    return field(default=default, metadata=DETECTOR)


@dataclass
class InspectConfig:
    """Everything one `detection inspect` run needs."""

    checkpoint: str
    inputs: list[str]
    output: str
    batch_size: int | None = None  # images per model call; None: 8 on CUDA, 1 on CPU
    # DataLoader processes; None: one per core on CPU (where they also run the model), else 4.
    workers: int | None = None
    devices: int = 1  # processes (GPUs) on this node, one rank each
    num_nodes: int = 1
    node_rank: int = 0
    device: str = _detector("auto")  # 'auto', 'cpu', 'cuda' or 'cuda:N'
    precision: str = _detector("auto")
    thresholds: ThresholdsLike = _detector(None)  # overrides of the checkpoint's thresholds
    report_threshold: float = _detector(REPORT_DEFAULT)
    tile: int | None = _detector(None)
    overlap: float = _detector(0.2)
    max_pixels: int | None = _detector(MAX_PIXELS)  # None (or 0 on the command line): no limit
    save_images: bool = False
    coco_results: bool = False
    csv: bool = False
    shard_lines: int = 10000  # lines per results shard before a new one starts
    fsync: bool = True  # make every batch durable before the next; off only for benchmarks
    progress: bool = True

    def __post_init__(self) -> None:
        if self.max_pixels == 0:
            self.max_pixels = None
        if isinstance(self.thresholds, list | tuple):  # command-line strings
            self.thresholds = Thresholds.parse(self.thresholds)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> InspectConfig:
        """The config of a namespace whose option names are this class's fields, plus overrides."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        return cls(**{**values, **overrides})

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The fields' default values (the command line's defaults)."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    def make_detector(self, device: str | None = None) -> Detector:
        """The Detector these settings describe; `device` replaces the config's."""
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata == DETECTOR}
        options["device"] = device or self.device
        return Detector.from_checkpoint(self.checkpoint, **options)

    @property
    def world_size(self) -> int:
        """Ranks over all nodes."""
        return self.devices * self.num_nodes

    def check(self) -> None:
        """Refuse impossible numbers before any work starts."""
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if self.devices < 1 or self.num_nodes < 1:
            raise ValueError("devices and num_nodes must be >= 1")
        if not 0 <= self.node_rank < self.num_nodes:
            raise ValueError(f"node_rank {self.node_rank} is outside 0..{self.num_nodes - 1}")
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        check_device_name(self.device)

    def batch_size_on(self, device: torch.device) -> int:
        """batch_size, or the default for the device."""
        if self.batch_size is not None:
            return self.batch_size
        # Single-threaded CPU workers ran the light model ~15% faster one image at a time than in
        # batches of 4 (measured; see scripts/bench_inspect.py); GPUs need batches to be busy.
        return 8 if device.type == "cuda" else 1

    def workers_on(self, device: torch.device) -> int:
        """workers, or the default for the device."""
        if self.workers is not None:
            return self.workers
        cores = max(1, usable_cores() // self.devices)
        return cores if device.type == "cpu" else min(4, cores)


def check_device_name(device: str) -> None:
    """Refuse a device a job cannot run on, before a model is loaded for it.

    Raises:
        ValueError: `device` is not 'auto', 'cpu', 'cuda' or 'cuda:N', in one line.
    """
    if str(device) == "auto":
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device '{device}' is not one of auto, cpu, cuda or cuda:N")


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
