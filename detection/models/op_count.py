"""Counting the ops of one training step, and those that make the host wait for a GPU.

Counted with torch.profiler on whatever device the model is on (a CPU is enough: the op
sequence is the device's). On CUDA the ops in `SYNC_OPS` wait for the device, because their
output size or value is only known there: nonzero, item / _local_scalar_dense, is_nonzero,
unique, equal, and torchvision's nms.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

SYNC_OPS = (
    "aten::nonzero",
    "aten::item",
    "aten::_local_scalar_dense",
    "aten::is_nonzero",
    "aten::_unique2",
    "aten::unique_consecutive",
    "aten::equal",
    "torchvision::nms",
)


def count_training_step(
    model: torch.nn.Module, images: list[torch.Tensor], targets: list[dict[str, Any]]
) -> Counter:
    """Names and counts of the aten and torchvision ops of one forward + backward pass."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        sum(model(images, targets).values()).backward()
    return Counter(
        event.name for event in prof.events() if event.name.startswith(("aten::", "torchvision::"))
    )


def sync_ops(ops: Counter) -> dict[str, int]:
    """The ops among `ops` that wait for the device on CUDA, with their counts (nonzero only)."""
    return {name: ops[name] for name in SYNC_OPS if ops[name]}
