"""Aspect-ratio grouped batching, after torchvision's references/detection/group_by_aspect_ratio.py."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch.utils.data import BatchSampler, Sampler


def create_aspect_ratio_groups(
    aspect_ratios: Sequence[float] | np.ndarray, k: int = 0
) -> np.ndarray:
    """Group id of each width/height ratio, in 2k+2 bins spaced evenly in log2 from 1/2 to 2."""
    bins = 2 ** np.linspace(-1, 1, 2 * k + 1) if k > 0 else np.array([1.0])
    # bisect_right, as torchvision's _quantize: a ratio equal to a bin edge goes to the upper bin.
    return np.searchsorted(bins, np.asarray(aspect_ratios, dtype=np.float64), side="right")


class GroupedBatchSampler(BatchSampler):
    """Batches whose images share an aspect-ratio group, so padding to the batch's size wastes little.

    Unlike torchvision's version every index of ``sampler`` is used exactly once per epoch:
    the incomplete groups left at the end are merged into mixed batches. The batch count is
    therefore len(sampler) / batch_size (rounded as drop_last says) on every rank, which DDP
    needs. Lightning can re-create it around its DistributedSampler: the argument is named
    ``sampler`` and the class derives from BatchSampler.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        group_ids: Sequence[int] | np.ndarray,
        batch_size: int,
        drop_last: bool = False,
    ) -> None:
        super().__init__(sampler, batch_size, drop_last)
        self.group_ids = np.asarray(group_ids, dtype=np.int64)

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        for index in self.sampler:
            buffer = buffers[int(self.group_ids[index])]
            buffer.append(int(index))
            if len(buffer) == self.batch_size:
                yield buffer.copy()
                buffer.clear()
        # Fullest groups first, so the mixed batches mix as few groups as possible.
        rest = [i for buffer in sorted(buffers.values(), key=len, reverse=True) for i in buffer]
        for start in range(0, len(rest), self.batch_size):
            batch = rest[start : start + self.batch_size]
            if len(batch) < self.batch_size and self.drop_last:
                return
            yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        if self.drop_last:
            return n // self.batch_size
        return (n + self.batch_size - 1) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to a DistributedSampler inside, for loops outside Lightning."""
        set_epoch: Any = getattr(self.sampler, "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
