"""The region proposal network's forward pass over a whole batch, with torchvision's RPN module
(head, anchor generator and settings) and its rules; proposals come out padded, with a mask."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork

from detection.models.batched.boxes import box_iou, clip_to_images, decode, encode, is_large_enough
from detection.models.batched.matching import BETWEEN_THRESHOLDS, match, sample_balanced
from detection.models.batched.nms import batched_nms_top_k, greedy_nms_keep
from detection.models.batched.transform import ImageBatch, TargetBatch


def flatten_levels(
    objectness: list[Tensor], deltas: list[Tensor]
) -> tuple[Tensor, Tensor, list[int]]:
    """Per-level head outputs as (B, N) logits and (B, N, 4) deltas, anchor order as torchvision."""
    logits, codes, per_level = [], [], []
    for level_logits, level_deltas in zip(objectness, deltas, strict=True):
        batch, anchors, height, width = level_logits.shape
        logits.append(level_logits.permute(0, 2, 3, 1).reshape(batch, -1))
        codes.append(
            level_deltas.view(batch, anchors, 4, height, width)
            .permute(0, 3, 4, 1, 2)
            .reshape(batch, -1, 4)
        )
        per_level.append(anchors * height * width)
    return torch.cat(logits, dim=1), torch.cat(codes, dim=1), per_level


def select_proposals(
    rpn: RegionProposalNetwork,
    anchors: Tensor,
    codes: Tensor,
    logits: Tensor,
    per_level: list[int],
    batch: ImageBatch,
    matrix_nms: bool,
) -> tuple[Tensor, Tensor]:
    """The best proposals of each level, clipped and de-duplicated: ((B, P, 4), valid (B, P)).

    Only the candidates (the `pre_nms_top_n` best anchors of each level by objectness) are
    decoded: torchvision decodes every anchor first, about 30x as many boxes at 800 px.

    `matrix_nms` runs NMS as batched tensor work per (image, level) (the GPU path, a few syncs);
    otherwise torchvision's `nms` (`grouped_nms`: per image and level on a CPU).
    """
    logits = logits.detach()
    top, sizes, offset = [], [], 0
    for count in per_level:
        k = min(rpn.pre_nms_top_n(), count)
        top.append(logits[:, offset : offset + count].topk(k, dim=1).indices + offset)
        sizes.append(k)
        offset += count
    top_idx = torch.cat(top, dim=1)
    scores = torch.sigmoid(logits.gather(1, top_idx))
    boxes = decode(
        codes.detach().gather(1, top_idx[..., None].expand(-1, -1, 4)),
        anchors[top_idx],
        rpn.box_coder.weights,
        rpn.box_coder.bbox_xform_clip,
    )
    boxes = clip_to_images(boxes, batch.sizes)
    valid = is_large_enough(boxes, rpn.min_size) & (scores >= rpn.score_thresh)
    if matrix_nms:
        keep, kept = level_nms_top_k(boxes, scores, valid, sizes, rpn)
    else:
        levels = [torch.full((k,), level, device=boxes.device) for level, k in enumerate(sizes)]
        keep, kept = batched_nms_top_k(
            boxes,
            scores,
            torch.cat(levels),
            len(sizes),
            valid,
            rpn.nms_thresh,
            rpn.post_nms_top_n(),
        )
    chosen = boxes.gather(1, keep[..., None].expand(-1, -1, 4))
    return torch.where(kept[..., None], chosen, torch.zeros_like(chosen)), kept


def level_nms_top_k(
    boxes: Tensor, scores: Tensor, valid: Tensor, sizes: list[int], rpn: RegionProposalNetwork
) -> tuple[Tensor, Tensor]:
    """NMS inside each (image, level) block of candidates, then the best per image, by score.

    The candidates of a level are a contiguous block of `sizes[level]` columns; blocks are
    padded to one size so that every (image, level) is a row of `greedy_nms_keep`.
    """
    batch, width = len(boxes), max(sizes)
    blocks = zip(boxes.split(sizes, 1), scores.split(sizes, 1), valid.split(sizes, 1), strict=True)
    padded = [
        (
            F.pad(b, (0, 0, 0, width - b.shape[1])),
            F.pad(s, (0, width - s.shape[1])),
            F.pad(v, (0, width - v.shape[1])),
        )
        for b, s, v in blocks
    ]
    stacked = [torch.stack(parts, dim=1).flatten(0, 1) for parts in zip(*padded, strict=True)]
    keep = greedy_nms_keep(*stacked, rpn.nms_thresh).view(batch, len(sizes), width)
    keep = torch.cat([keep[:, level, :size] for level, size in enumerate(sizes)], dim=1)
    ranked = torch.where(keep, scores, torch.full_like(scores, float("-inf")))
    best, index = ranked.topk(min(rpn.post_nms_top_n(), ranked.shape[1]), dim=1)
    return index, best > float("-inf")


def rpn_losses(
    rpn: RegionProposalNetwork,
    anchors: Tensor,
    logits: Tensor,
    deltas: Tensor,
    targets: TargetBatch,
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    """Objectness and box losses on a balanced sample of anchors, normalized as torchvision."""
    matcher = rpn.proposal_matcher
    iou = box_iou(targets.boxes, anchors)
    matches = match(
        iou,
        targets.valid,
        matcher.high_threshold,
        matcher.low_threshold,
        allow_low_quality_matches=True,
    )
    labels = (matches >= 0).to(logits.dtype)
    labels = torch.where(matches == BETWEEN_THRESHOLDS, torch.full_like(labels, -1.0), labels)
    sampler = rpn.fg_bg_sampler
    idx, positive, valid = sample_balanced(
        labels, sampler.batch_size_per_image, sampler.positive_fraction, generator
    )
    sampled = valid.sum().clamp(min=1)
    matched_gt = targets.boxes.gather(
        1, matches.clamp(min=0).gather(1, idx)[..., None].expand(-1, -1, 4)
    )
    regression = encode(matched_gt, anchors[idx], rpn.box_coder.weights)
    picked_deltas = deltas.gather(1, idx[..., None].expand(-1, -1, 4))
    use_box = positive & valid
    regression = torch.where(use_box[..., None], regression, picked_deltas.detach())
    box_loss = F.smooth_l1_loss(picked_deltas, regression, beta=1 / 9, reduction="none")
    box_loss = (box_loss.sum(dim=-1) * use_box).sum() / sampled
    objectness = F.binary_cross_entropy_with_logits(
        logits.gather(1, idx), labels.gather(1, idx), reduction="none"
    )
    objectness = (objectness * valid).sum() / sampled
    return {"loss_objectness": objectness, "loss_rpn_box_reg": box_loss}


def rpn_forward(
    rpn: RegionProposalNetwork,
    batch: ImageBatch,
    features: list[Tensor],
    targets: TargetBatch | None,
    generator: torch.Generator | None = None,
    matrix_nms: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Proposals (B, P, 4) with their mask, and the RPN losses when training."""
    objectness, deltas = rpn.head(features)
    # Every image of a padded batch has the same anchors: make them once.
    anchors = rpn.anchor_generator(ImageList(batch.tensors, batch.image_sizes[:1]), features)[0]
    logits, codes, per_level = flatten_levels(objectness, deltas)
    boxes, valid = select_proposals(rpn, anchors, codes, logits, per_level, batch, matrix_nms)
    losses = {}
    if rpn.training:
        if targets is None:
            raise ValueError("targets are needed in training mode")
        losses = rpn_losses(rpn, anchors, logits, codes, targets, generator)
    return boxes, valid, losses
