"""Matching anchors or proposals to ground truth, and balanced sampling, for a whole batch.

torchvision's `Matcher` and `BalancedPositiveNegativeSampler` rules, on padded tensors: ground
truth is (B, G, ...) with a validity mask, candidates are (B, N, ...); nothing leaves the device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from detection.models.batched.ranking import topk_stable

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def match(
    iou: Tensor, gt_valid: Tensor, high: float, low: float, allow_low_quality_matches: bool
) -> Tensor:
    """Index of the matched ground truth per candidate (B, N), or -1 (below low) / -2 (between).

    torchvision: `Matcher.__call__`. `iou` is (B, G, N). Padded ground truth never matches; an
    image without any ground truth leaves every candidate below the low threshold, as
    torchvision treats a background image.
    """
    # batching: padded ground truth never matches.
    iou = torch.where(gt_valid[:, :, None], iou, torch.full_like(iou, -1.0))  # [B, G, N]
    matched_vals, matches = iou.max(dim=1)  # [B, N], [B, N]
    all_matches = matches  # [B, N]
    below = matched_vals < low  # [B, N]
    between = (matched_vals >= low) & (matched_vals < high)  # [B, N]
    matches = matches.masked_fill(below, BELOW_LOW_THRESHOLD)  # [B, N]
    matches = matches.masked_fill(between, BETWEEN_THRESHOLDS)  # [B, N]
    if allow_low_quality_matches:
        # Candidates that are the best for some ground truth (ties included) keep their argmax.
        highest = iou.max(dim=2, keepdim=True).values  # [B, G, 1]
        best_for_some_gt = ((iou == highest) & gt_valid[:, :, None]).any(dim=1)  # [B, N]
        matches = torch.where(best_for_some_gt, all_matches, matches)  # [B, N]
    return matches


def sample_balanced(
    labels: Tensor,
    batch_size_per_image: int,
    positive_fraction: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Pick candidates per image: (indices (B, S), positive (B, S), valid (B, S)).

    torchvision: `BalancedPositiveNegativeSampler.__call__`. `labels` (B, N): >= 1 positive,
    0 negative, -1 ignored. As torchvision: at most
    `int(batch_size_per_image * positive_fraction)` positives chosen at random, then negatives
    fill the rest of `batch_size_per_image`. Positives come first in each row; slots beyond what
    an image can fill are invalid. Random keys + top-k replace torchvision's per-image randperm.
    """
    batch, count = labels.shape
    slots = min(batch_size_per_image, count)
    max_positives = min(int(batch_size_per_image * positive_fraction), count)
    keys = torch.rand(labels.shape, device=labels.device, generator=generator)  # [B, N]
    ignored = torch.full_like(keys, -1.0)  # [B, N]
    positives = torch.where(labels >= 1, keys, ignored)  # [B, N]
    positive_keys, positive_idx = topk_stable(positives, max_positives, 1)  # [B, Sp], [B, Sp]
    negatives = torch.where(labels == 0, keys, ignored)  # [B, N]
    negative_keys, negative_idx = topk_stable(negatives, slots, 1)  # [B, S], [B, S]
    num_positives = (positive_keys >= 0).sum(dim=1, keepdim=True)  # [B, 1]

    slot = torch.arange(slots, device=labels.device)[None]  # [1, S]
    from_positives = slot < num_positives  # [B, S]
    negative_slot = (slot - num_positives).clamp(min=0)  # [B, S]
    if max_positives > 0:
        positive_slot = slot.clamp(max=max_positives - 1).expand(batch, -1)  # [B, S]
        positive_pick = positive_idx.gather(1, positive_slot)  # [B, S]
    else:
        positive_pick = torch.zeros_like(negative_idx)  # [B, S]
    negative_pick = negative_idx.gather(1, negative_slot)  # [B, S]
    indices = torch.where(from_positives, positive_pick, negative_pick)  # [B, S]
    # batching: slots beyond the candidates an image has are invalid.
    valid = from_positives | (negative_keys.gather(1, negative_slot) >= 0)  # [B, S]
    return indices, from_positives, valid
