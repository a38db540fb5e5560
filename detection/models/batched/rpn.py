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
        logits.append(level_logits.permute(0, 2, 3, 1).reshape(batch, -1))  # [B, h * w * a]
        flat_deltas.append(
            level_deltas.view(batch, anchors, 4, height, width)  # [B, a, 4, h, w]
            .permute(0, 3, 4, 1, 2)  # [B, h, w, a, 4]
            .reshape(batch, -1, 4)
        )  # [B, h * w * a, 4]
        per_level.append(anchors * height * width)
    return torch.cat(logits, dim=1), torch.cat(flat_deltas, dim=1), per_level  # [B, A], [B, A, 4]


def top_n_idx(
    rpn: RegionProposalNetwork, logits: Tensor, per_level: list[int]
) -> tuple[Tensor, list[int]]:
    """The `pre_nms_top_n` best anchors of each level, levels side by side: ((B, C), per level).

    torchvision: `RegionProposalNetwork._get_top_n_idx`.
    """
    top, sizes, offset = [], [], 0
    for count in per_level:
        k = min(rpn.pre_nms_top_n(), count)
        level = logits[:, offset : offset + count]  # [B, h * w * a]
        top.append(topk_stable(level, k, dim=1)[1] + offset)  # [B, Cl]
        sizes.append(k)
        offset += count
    return torch.cat(top, dim=1), sizes  # [B, C]


def decode_and_clip(
    rpn: RegionProposalNetwork, anchors: Tensor, deltas: Tensor, top_idx: Tensor, sizes: Tensor
) -> Tensor:
    """The candidates' boxes (B, C, 4), decoded from their deltas and clipped to their image.

    torchvision: `BoxCoder.decode` (in `RegionProposalNetwork.forward`) then
    `box_ops.clip_boxes_to_image` (in `filter_proposals`); only the candidates are decoded,
    where torchvision decodes every anchor (about 30x as many boxes at 800 px).
    """
    boxes = decode(
        gather_boxes(deltas.detach(), top_idx),  # [B, C, 4]
        anchors[top_idx],  # [B, C, 4]
        rpn.box_coder.weights,
        rpn.box_coder.bbox_xform_clip,
    )  # [B, C, 4]
    return clip_to_images(boxes, sizes)  # [B, C, 4]


def keep_large_and_likely(rpn: RegionProposalNetwork, boxes: Tensor, scores: Tensor) -> Tensor:
    """(B, C) True for candidates with both sides of `min_size` and a score of `score_thresh`.

    torchvision: `box_ops.remove_small_boxes` then the score threshold, in `filter_proposals`;
    batching: a valid mask, not a cut.
    """
    return is_large_enough(boxes, rpn.min_size) & (scores >= rpn.score_thresh)  # [B, C]


def nms_top_n(
    rpn: RegionProposalNetwork,
    boxes: Tensor,
    scores: Tensor,
    valid: Tensor,
    sizes: list[int],
    fixpoint_nms: bool,
) -> tuple[Tensor, Tensor]:
    """NMS per (image, level), then the `post_nms_top_n` best: (indices (B, P), valid (B, P)).

    torchvision: `box_ops.batched_nms` then `keep[: self.post_nms_top_n()]`, in
    `filter_proposals`. `fixpoint_nms` runs exact greedy NMS by fixed-point iteration, batched
    per (image, level) (the GPU path, a few syncs); otherwise torchvision's `nms`
    (`grouped_nms`: per image and level on a CPU).
    """
    if fixpoint_nms:
        return level_nms_top_k(boxes, scores, valid, sizes, rpn)  # [B, P], [B, P]
    device = boxes.device
    levels = [torch.full((k,), level, device=device) for level, k in enumerate(sizes)]  # L x [Cl]
    post_nms_top_n = rpn.post_nms_top_n()
    return batched_nms_top_k(
        boxes, scores, torch.cat(levels), len(sizes), valid, rpn.nms_thresh, post_nms_top_n
    )  # [B, P], [B, P]


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

    torchvision: `RegionProposalNetwork.filter_proposals` (with the decode of `forward`), in its
    steps: `top_n_idx`, `decode_and_clip`, `keep_large_and_likely`, `nms_top_n`. Decoding after
    the top-n, not before, is the one reordering.
    """
    logits = logits.detach()  # [B, A]
    top_idx, sizes = top_n_idx(rpn, logits, per_level)  # [B, C]
    scores = torch.sigmoid(logits.gather(1, top_idx))  # [B, C]
    boxes = decode_and_clip(rpn, anchors, deltas, top_idx, batch.sizes)  # [B, C, 4]
    valid = keep_large_and_likely(rpn, boxes, scores)  # [B, C]
    keep, kept = nms_top_n(rpn, boxes, scores, valid, sizes, fixpoint_nms)  # [B, P], [B, P]
    chosen = gather_boxes(boxes, keep)  # [B, P, 4]
    # batching: padded slots hold zero boxes.
    return torch.where(kept[..., None], chosen, torch.zeros_like(chosen)), kept  # [B, P, 4], [B, P]


def level_nms_top_k(
    boxes: Tensor, scores: Tensor, valid: Tensor, sizes: list[int], rpn: RegionProposalNetwork
) -> tuple[Tensor, Tensor]:
    """NMS inside each (image, level) block of candidates, then the best per image, by score.

    torchvision: `box_ops.batched_nms` by level then `keep[: self.post_nms_top_n()]`. The
    candidates of a level are a contiguous block of `sizes[level]` columns; blocks are padded to
    one size so that every (image, level) is a row of `fixpoint_nms_keep`.
    """
    batch, width = len(boxes), max(sizes)
    blocks = zip(
        boxes.split(sizes, 1), scores.split(sizes, 1), valid.split(sizes, 1), strict=True
    )  # L x ([B, Cl, 4], [B, Cl], [B, Cl])
    padded = [
        (
            F.pad(b, (0, 0, 0, width - b.shape[1])),  # batching: [B, N, 4]
            F.pad(s, (0, width - s.shape[1])),  # batching: [B, N]
            F.pad(v, (0, width - v.shape[1])),  # batching: [B, N]
        )
        for b, s, v in blocks
    ]  # L x ([B, N, 4], [B, N], [B, N])
    row_boxes = torch.stack([b for b, _, _ in padded], dim=1).flatten(0, 1)  # [R, N, 4]
    row_scores = torch.stack([s for _, s, _ in padded], dim=1).flatten(0, 1)  # [R, N]
    row_valid = torch.stack([v for _, _, v in padded], dim=1).flatten(0, 1)  # [R, N]
    keep = fixpoint_nms_keep(row_boxes, row_scores, row_valid, rpn.nms_thresh)  # [R, N]
    keep = keep.view(batch, len(sizes), width)  # [B, L, N]
    keep = torch.cat([keep[:, level, :size] for level, size in enumerate(sizes)], dim=1)  # [B, C]
    ranked = torch.where(keep, scores, torch.full_like(scores, float("-inf")))  # [B, C]
    top_n = min(rpn.post_nms_top_n(), ranked.shape[1])
    best, index = topk_stable(ranked, top_n, dim=1)  # [B, P], [B, P]
    return index, best > float("-inf")  # [B, P], [B, P]


def assign_targets_to_anchors(
    rpn: RegionProposalNetwork, anchors: Tensor, targets: TargetBatch, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Anchor labels (B, A) (1 object, 0 background, -1 between thresholds) and matches (B, A).

    torchvision: `RegionProposalNetwork.assign_targets_to_anchors`; it returns each anchor's
    matched box, this the index of it (`match`'s codes below 0), so that only the sampled
    anchors' boxes are gathered.
    """
    matcher = rpn.proposal_matcher
    iou = box_iou(targets.boxes, anchors)  # [B, G, A]
    matches = match(
        iou,
        targets.valid,
        matcher.high_threshold,
        matcher.low_threshold,
        allow_low_quality_matches=True,
    )  # [B, A]
    labels = (matches >= 0).to(dtype)  # [B, A]
    between = matches == BETWEEN_THRESHOLDS  # [B, A]
    return torch.where(between, torch.full_like(labels, -1.0), labels), matches  # [B, A], [B, A]


def compute_loss(
    rpn: RegionProposalNetwork,
    anchors: Tensor,
    logits: Tensor,
    deltas: Tensor,
    labels: Tensor,
    matches: Tensor,
    targets: TargetBatch,
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    """Objectness and box losses on a balanced sample of anchors, normalized as torchvision.

    torchvision: `RegionProposalNetwork.compute_loss` (balanced sample, smooth L1 on the
    positives' deltas, binary cross-entropy on every sampled anchor, both divided by the number
    sampled), with the regression targets of `forward` (`BoxCoder.encode`) for the sampled
    anchors only.
    """
    sampler = rpn.fg_bg_sampler
    idx, positive, valid = sample_balanced(
        labels, sampler.batch_size_per_image, sampler.positive_fraction, generator
    )  # [B, S], [B, S], [B, S]
    sampled = valid.sum().clamp(min=1)  # batching: padded samples do not count, []
    matched_gt = gather_boxes(targets.boxes, matches.clamp(min=0).gather(1, idx))  # [B, S, 4]
    regression = encode(matched_gt, anchors[idx], rpn.box_coder.weights)  # [B, S, 4]
    picked_deltas = gather_boxes(deltas, idx)  # [B, S, 4]
    use_box = positive & valid  # batching: [B, S]
    regression = torch.where(use_box[..., None], regression, picked_deltas.detach())  # [B, S, 4]
    box_loss = F.smooth_l1_loss(
        picked_deltas, regression, beta=SMOOTH_L1_BETA, reduction="none"
    )  # [B, S, 4]
    box_loss = (box_loss.sum(dim=-1) * use_box).sum() / sampled  # []
    objectness = F.binary_cross_entropy_with_logits(
        logits.gather(1, idx), labels.gather(1, idx), reduction="none"
    )  # [B, S]
    objectness = (objectness * valid).sum() / sampled  # []
    return {"loss_objectness": objectness, "loss_rpn_box_reg": box_loss}


def rpn_losses(
    rpn: RegionProposalNetwork,
    anchors: Tensor,
    logits: Tensor,
    deltas: Tensor,
    targets: TargetBatch,
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    """The RPN's losses: `assign_targets_to_anchors` then `compute_loss`, as torchvision's
    `RegionProposalNetwork.forward` in training."""
    labels, matches = assign_targets_to_anchors(
        rpn, anchors, targets, logits.dtype
    )  # [B, A], [B, A]
    return compute_loss(rpn, anchors, logits, deltas, labels, matches, targets, generator)


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
    objectness, level_deltas = rpn.head(features)  # L x [B, a, h, w], L x [B, a * 4, h, w]
    # Every image of a padded batch has the same anchors: make them once.
    one_image = ImageList(batch.tensors, batch.image_sizes[:1])
    anchors = rpn.anchor_generator(one_image, features)[0]  # [A, 4]
    logits, deltas, per_level = flatten_levels(objectness, level_deltas)  # [B, A], [B, A, 4]
    boxes, valid = select_proposals(
        rpn, anchors, deltas, logits, per_level, batch, fixpoint_nms
    )  # [B, P, 4], [B, P]
    losses = {}
    if rpn.training:
        if targets is None:
            raise ValueError("targets are needed in training mode")
        losses = rpn_losses(rpn, anchors, logits, deltas, targets, generator)
    return boxes, valid, losses
