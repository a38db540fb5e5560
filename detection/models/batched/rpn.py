"""The region proposal network's forward pass over a whole batch, with torchvision's RPN module
(head, anchor generator and settings) and its rules; proposals come out padded, with a mask."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork

from detection.models.batched.boxes import (
    SMOOTH_L1_BETA,
    box_iou,
    clip_to_images,
    decode,
    encode,
    gather_boxes,
    is_large_enough,
)
from detection.models.batched.matching import BETWEEN_THRESHOLDS, match, sample_balanced
from detection.models.batched.nms import batched_nms_top_k, fixpoint_nms_keep
from detection.models.batched.ranking import topk_stable
from detection.models.batched.transform import ImageBatch, TargetBatch


def flatten_levels(
    objectness: list[Tensor], deltas: list[Tensor]
) -> tuple[Tensor, Tensor, list[int]]:
    """Per-level head outputs as (B, A) logits and (B, A, 4) deltas, anchor order as torchvision.

    torchvision: `rpn.concat_box_prediction_layers` (kept per image instead of flattened).
    """
    logits, flat_deltas, per_level = [], [], []
    for level_logits, level_deltas in zip(objectness, deltas, strict=True):
        batch, anchors, height, width = level_logits.shape
        logits.append(level_logits.permute(0, 2, 3, 1).reshape(batch, -1))
        flat_deltas.append(
            level_deltas.view(batch, anchors, 4, height, width)
            .permute(0, 3, 4, 1, 2)
            .reshape(batch, -1, 4)
        )
        per_level.append(anchors * height * width)
    return torch.cat(logits, dim=1), torch.cat(flat_deltas, dim=1), per_level


def select_proposals(
    rpn: RegionProposalNetwork,
    anchors: Tensor,
    deltas: Tensor,
    logits: Tensor,
    per_level: list[int],
    batch: ImageBatch,
    fixpoint_nms: bool,
) -> tuple[Tensor, Tensor]:
    """The best proposals of each level, clipped and de-duplicated: ((B, P, 4), valid (B, P)).

    torchvision: `RegionProposalNetwork.filter_proposals` (with the decode of `forward`), step
    by step: 1. `_get_top_n_idx` (the `pre_nms_top_n` best anchors of each level), 2. decode
    (`BoxCoder.decode`), 3. `clip_boxes_to_image`, 4. `remove_small_boxes` and 5. the score
    threshold (both as a valid mask instead of dropping boxes), 6. NMS per level
    (`batched_nms`), 7. the `post_nms_top_n` best. Decoding after step 1, not before, is the
    one reordering: torchvision decodes every anchor, about 30x as many boxes at 800 px.

    `fixpoint_nms` runs exact greedy NMS by fixed-point iteration, batched per (image, level)
    (the GPU path, a few syncs); otherwise torchvision's `nms` (`grouped_nms`: per image and
    level on a CPU).
    """
    logits = logits.detach()  # [B, A]
    # 1. _get_top_n_idx: the best anchors of each level, levels side by side.
    top, sizes, offset = [], [], 0
    for count in per_level:
        k = min(rpn.pre_nms_top_n(), count)
        top.append(topk_stable(logits[:, offset : offset + count], k, dim=1)[1] + offset)
        sizes.append(k)
        offset += count
    top_idx = torch.cat(top, dim=1)  # [B, C]
    scores = torch.sigmoid(logits.gather(1, top_idx))  # [B, C]
    # 2. decode the candidates only.
    boxes = decode(
        gather_boxes(deltas.detach(), top_idx),  # [B, C, 4]
        anchors[top_idx],
        rpn.box_coder.weights,
        rpn.box_coder.bbox_xform_clip,
    )  # [B, C, 4]
    boxes = clip_to_images(boxes, batch.sizes)  # 3. clip_boxes_to_image, [B, C, 4]
    # 4. remove_small_boxes and 5. score threshold; batching: a mask, not a cut.
    valid = is_large_enough(boxes, rpn.min_size) & (scores >= rpn.score_thresh)  # [B, C]
    # 6. NMS per (image, level) and 7. the post_nms_top_n best per image.
    if fixpoint_nms:
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
    chosen = gather_boxes(boxes, keep)  # [B, P, 4]
    # batching: padded slots hold zero boxes.
    return torch.where(kept[..., None], chosen, torch.zeros_like(chosen)), kept


def level_nms_top_k(
    boxes: Tensor, scores: Tensor, valid: Tensor, sizes: list[int], rpn: RegionProposalNetwork
) -> tuple[Tensor, Tensor]:
    """NMS inside each (image, level) block of candidates, then the best per image, by score.

    The candidates of a level are a contiguous block of `sizes[level]` columns; blocks are
    padded to one size so that every (image, level) is a row of `fixpoint_nms_keep`.
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
    keep = fixpoint_nms_keep(*stacked, rpn.nms_thresh).view(batch, len(sizes), width)
    keep = torch.cat([keep[:, level, :size] for level, size in enumerate(sizes)], dim=1)
    ranked = torch.where(keep, scores, torch.full_like(scores, float("-inf")))
    best, index = topk_stable(ranked, min(rpn.post_nms_top_n(), ranked.shape[1]), dim=1)
    return index, best > float("-inf")


def rpn_losses(
    rpn: RegionProposalNetwork,
    anchors: Tensor,
    logits: Tensor,
    deltas: Tensor,
    targets: TargetBatch,
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    """Objectness and box losses on a balanced sample of anchors, normalized as torchvision.

    torchvision: `RegionProposalNetwork.assign_targets_to_anchors` (match anchors to ground
    truth, label 1 / 0 / -1 between thresholds) then `compute_loss` (balanced sample, smooth L1
    on the positives' deltas, binary cross-entropy on every sampled anchor, both divided by the
    number sampled).
    """
    # assign_targets_to_anchors
    matcher = rpn.proposal_matcher
    iou = box_iou(targets.boxes, anchors)  # [B, G, A]
    matches = match(
        iou,
        targets.valid,
        matcher.high_threshold,
        matcher.low_threshold,
        allow_low_quality_matches=True,
    )
    labels = (matches >= 0).to(logits.dtype)  # [B, A]
    labels = torch.where(matches == BETWEEN_THRESHOLDS, torch.full_like(labels, -1.0), labels)
    # compute_loss
    sampler = rpn.fg_bg_sampler
    idx, positive, valid = sample_balanced(
        labels, sampler.batch_size_per_image, sampler.positive_fraction, generator
    )
    sampled = valid.sum().clamp(min=1)  # batching: padded samples do not count
    matched_gt = gather_boxes(targets.boxes, matches.clamp(min=0).gather(1, idx))  # [B, S, 4]
    regression = encode(matched_gt, anchors[idx], rpn.box_coder.weights)
    picked_deltas = gather_boxes(deltas, idx)  # [B, S, 4]
    use_box = positive & valid
    regression = torch.where(use_box[..., None], regression, picked_deltas.detach())
    box_loss = F.smooth_l1_loss(picked_deltas, regression, beta=SMOOTH_L1_BETA, reduction="none")
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
    fixpoint_nms: bool = False,
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Proposals (B, P, 4) with their mask, and the RPN losses when training.

    torchvision: `RegionProposalNetwork.forward`.
    """
    objectness, level_deltas = rpn.head(features)
    # Every image of a padded batch has the same anchors: make them once.
    anchors = rpn.anchor_generator(ImageList(batch.tensors, batch.image_sizes[:1]), features)[0]
    logits, deltas, per_level = flatten_levels(objectness, level_deltas)  # [B, A], [B, A, 4]
    boxes, valid = select_proposals(rpn, anchors, deltas, logits, per_level, batch, fixpoint_nms)
    losses = {}
    if rpn.training:
        if targets is None:
            raise ValueError("targets are needed in training mode")
        losses = rpn_losses(rpn, anchors, logits, deltas, targets, generator)
    return boxes, valid, losses
