"""The export's gather merge of MultiScaleRoIAlign's levels equals torchvision's scatter merge."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import poolers

from detection.inference.level_merge import gathered_level_merge, merge_levels_by_gather


@pytest.mark.parametrize(
    "levels",
    [
        [2, 0, 3, 0, 1, 1, 3, 2, 0],  # every level, interleaved
        [1, 1, 3, 1],  # levels 0 and 2 empty
        [],  # no RoI at all
    ],
)
def test_gather_merge_equals_torchvision_merge(levels: list[int]) -> None:
    generator = torch.Generator().manual_seed(0)
    level_of = torch.tensor(levels, dtype=torch.int64)  # (R,)
    per_level = [
        torch.rand((int((level_of == level).sum()), 3, 2, 2), generator=generator)  # (R_l, C, P, P)
        for level in range(4)
    ]
    want = poolers._onnx_merge_levels(level_of, per_level)  # (R, C, P, P)
    got = merge_levels_by_gather(level_of, per_level)  # (R, C, P, P)
    assert got.shape == (len(levels), 3, 2, 2)
    assert torch.equal(got, want)  # a reordering: the same values exactly
    for level in range(4):  # row i holds RoI i's features
        assert torch.equal(got[level_of == level], per_level[level])


def test_the_merge_is_swapped_only_inside_the_block() -> None:
    original = poolers._onnx_merge_levels
    with gathered_level_merge():
        assert poolers._onnx_merge_levels is merge_levels_by_gather
    assert poolers._onnx_merge_levels is original
    with pytest.raises(RuntimeError), gathered_level_merge():
        raise RuntimeError("an export that fails")
    assert poolers._onnx_merge_levels is original
