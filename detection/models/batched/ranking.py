"""Ranking by score with a fixed tie-break: equal scores keep their index order (lower first).

torch's `topk` and unstable `sort` leave the order of equal values to the kernel, which differs
between CPUs (AVX-512 sorts) and devices; every top-k and NMS order of the batched model goes
through here, so its results never depend on that order.
"""

from __future__ import annotations

import torch
from torch import Tensor


def order_stable(scores: Tensor, dim: int = -1) -> Tensor:
    """Indices that sort `scores` by decreasing value along `dim`, ties by increasing index."""
    return torch.sort(scores, dim=dim, descending=True, stable=True).indices  # [...]


def topk_stable(scores: Tensor, k: int, dim: int = -1) -> tuple[Tensor, Tensor]:
    """`torch.topk` (values, indices) with ties broken by increasing index.

    In place of `Tensor.topk` where torchvision calls it (`RegionProposalNetwork._get_top_n_idx`).
    """
    indices = order_stable(scores, dim).narrow(dim, 0, k)  # [...]
    return scores.gather(dim, indices), indices  # [...], [...]
