"""Learning-rate schedule: linear warmup, then multistep or cosine, evaluated every step."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence


def lr_factor(
    *,
    warmup_iters: int,
    warmup_factor: float,
    kind: str,
    total_steps: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
) -> Callable[[int], float]:
    """Multiplier of the base lr at a given optimizer step (for `torch.optim.lr_scheduler.LambdaLR`).

    `milestones` are optimizer steps; warmup ramps linearly from `warmup_factor` to 1 as in
    torchvision's references.
    """
    if kind not in {"multistep", "cosine", "constant"}:
        raise ValueError(f"scheduler must be multistep, cosine or constant, got '{kind}'")
    milestones = sorted(milestones)

    def factor(step: int) -> float:
        warm = 1.0
        if step < warmup_iters:
            alpha = step / warmup_iters
            warm = warmup_factor * (1 - alpha) + alpha
        if kind == "multistep":
            return warm * gamma ** sum(step >= m for m in milestones)
        if kind == "cosine":
            progress = min(1.0, step / max(1, total_steps))
            return warm * 0.5 * (1 + math.cos(math.pi * progress))
        return warm

    return factor
