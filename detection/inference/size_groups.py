"""Batches of equal-sized images, so that an image's detections never depend on its neighbours.

A detection model pads a batch to its largest image. Padding is not neutral: anchors in another
image's padding add proposals that compete for the per-level top-k and NMS, and the backbone's
features near the border change. A 380x96 image measured "pass" alone and "fail" in a batch of
8 of mixed sizes. Images of one original size are resized to one size and padded alike, so a
batch of them gives each image the input it gets alone; each size is therefore batched apart.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

import torch

Output = TypeVar("Output")


def size_key(image: torch.Tensor) -> Hashable:
    """What must be equal for two images to be padded alike: channels, height and width."""
    return tuple(image.shape)


def same_size_batches(keys: Sequence[Hashable], batch_size: int) -> list[list[int]]:
    """Indices of `keys` in batches of at most `batch_size` that share one key.

    Groups come in the order of their key's first appearance and keep the input order inside, so
    a run of equal keys is batched as it comes.

    Raises:
        ValueError: `batch_size` is below 1.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return [
        members[start : start + batch_size]
        for members in groups.values()
        for start in range(0, len(members), batch_size)
    ]


def run_by_size(
    images: Sequence[torch.Tensor],
    batch_size: int,
    run: Callable[[list[torch.Tensor]], Sequence[Output]],
) -> list[Output]:
    """`run` over batches of equal-sized images; one output per image, in the input order.

    Raises:
        ValueError: `batch_size` is below 1, or `run` returned another number of outputs than
        images it was given.
    """
    outputs: list[Output | None] = [None] * len(images)
    for batch in same_size_batches([size_key(image) for image in images], batch_size):
        results = list(run([images[i] for i in batch]))
        if len(results) != len(batch):
            raise ValueError(f"the model returned {len(results)} outputs for {len(batch)} images")
        for index, result in zip(batch, results, strict=True):
            outputs[index] = result
    return outputs  # type: ignore[return-value] - every index was filled above
