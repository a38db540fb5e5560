"""A traced graph for MultiScaleRoIAlign's level merge that gathers instead of scattering.

Checked against torchvision 0.26.0 and 0.29.1. In a traced graph (ONNX, and from it OpenVINO)
torchvision merges the per-level RoIAlign outputs with `poolers._onnx_merge_levels`: a zero
tensor of every RoI's pooled features, then per FPN level an index expanded to the features'
full shape and a ScatterElements of the whole tensor. At R50-FPN 1066x800 that is 1000 x 256 x
7 x 7 values filled, expanded and scattered four times: about 60 ms of OpenVINO's 0.7 s an
image (INT8 + bf16, two cores). Concatenating the levels and putting the rows back in RoI order
with one gather gives the same tensor, value for value.

Dimension names: R RoIs, L FPN levels, C channels, P the pooled side (7).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torchvision.ops import poolers

TORCHVISION_NAME = "_onnx_merge_levels"


def merge_levels_by_gather(levels: torch.Tensor, per_level: list[torch.Tensor]) -> torch.Tensor:
    """The pooled features of every RoI in RoI order, from each level's features in level order.

    Args:
        levels: (R,) the FPN level index of each RoI.
        per_level: L tensors (R_l, C, P, P), level l's RoIs in the order they appear in `levels`.

    Returns:
        (R, C, P, P), row i the features of RoI i: what torchvision's merge returns.
    """
    order = torch.cat([torch.where(levels == level)[0] for level in range(len(per_level))])  # (R,)
    merged = torch.cat(per_level)  # (R, C, P, P), rows in `order`
    return merged.index_select(0, torch.argsort(order))  # (R, C, P, P), rows in RoI order


@contextmanager
def gathered_level_merge() -> Iterator[None]:
    """Within the block, traced MultiScaleRoIAlign merges its levels with one gather; eager
    calls are unchanged (torchvision merges by name only while tracing). Where a torchvision
    release no longer has the function, the graph keeps torchvision's own merge."""
    original = getattr(poolers, TORCHVISION_NAME, None)
    if original is None:
        yield
        return
    setattr(poolers, TORCHVISION_NAME, merge_levels_by_gather)
    try:
        yield
    finally:
        setattr(poolers, TORCHVISION_NAME, original)
