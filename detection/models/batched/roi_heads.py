"""The box head's forward pass over a whole batch, with torchvision's RoIHeads module (pooler,
box head, predictor and settings): batched sampling and losses in training, batched
post-processing in evaluation."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, roi_align

from detection.models.batched.boxes import (
    LEVEL_MAPPER_EPS,
    MIN_DETECTION_SIDE,
    SMOOTH_L1_BETA,
    box_area,
    box_iou,
    clip_to_images,
    decode,
    encode,
    gather_boxes,
    is_large_enough,
)
from detection.models.batched.matching import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    match,
    sample_balanced,
)
from detection.models.batched.nms import batched_nms_top_k
from detection.models.batched.transform import ImageBatch, TargetBatch


def pool(
    pooler: MultiScaleRoIAlign,
    features: dict[str, Tensor],
    boxes: Tensor,
    every_level: bool,
) -> Tensor:
    """RoIAlign of (B, S, 4) boxes on the FPN level each belongs to: (B * S, C, h, w).

    torchvision: `MultiScaleRoIAlign.forward` (level choice and scales as its `LevelMapper`).
    `every_level` pools every box on every level and keeps its own level's result: more work,
    but no host sync (on a GPU that is cheaper than waiting); otherwise each level pools only
    its boxes (4 host syncs).
    """
    names = pooler.featmap_names
    maps = [value for name, value in features.items() if name in names]  # L x [B, Ch, h, w]
    batch, count = boxes.shape[:2]
    image_index = torch.arange(batch, device=boxes.device, dtype=boxes.dtype)  # [B]
    roi_image = image_index.repeat_interleave(count)[:, None]  # [B * S, 1]
    rois = torch.cat([roi_image, boxes.reshape(-1, 4)], dim=1)  # [B * S, 5]
    scales = list(pooler.scales)  # set from the backbone (pooler_scales.py), not per image
    size, ratio = pooler.output_size, pooler.sampling_ratio
    if len(maps) == 1:
        return roi_align(maps[0], rois, size, scales[0], ratio)  # [B * S, Ch, h, w]
    k_min, k_max = int(-math.log2(scales[0])), int(-math.log2(scales[-1]))
    sides = torch.sqrt(box_area(rois[:, 1:]))  # [B * S]
    mapper = pooler.canonical_scale, pooler.canonical_level
    levels = torch.floor(
        mapper[1]
        + torch.log2(sides / mapper[0])
        + torch.tensor(LEVEL_MAPPER_EPS, dtype=sides.dtype)
    )  # [B * S]
    levels = torch.clamp(levels, min=k_min, max=k_max).to(torch.int64) - k_min  # [B * S]

    channels = maps[0].shape[1]
    height, width = size
    result = maps[0].new_zeros((rois.shape[0], channels, height, width))  # [B * S, Ch, h, w]
    for level, (feature, scale) in enumerate(zip(maps, scales, strict=True)):
        if every_level:
            pooled = roi_align(feature, rois, size, scale, ratio)  # [B * S, Ch, h, w]
            here = (levels == level)[:, None, None, None]  # [B * S, 1, 1, 1]
            result = torch.where(here, pooled.to(result.dtype), result)  # [B * S, Ch, h, w]
        else:
            idx = torch.where(levels == level)[0]  # [V]
            pooled = roi_align(feature, rois[idx], size, scale, ratio)  # [V, Ch, h, w]
            result[idx] = pooled.to(result.dtype)  # [B * S, Ch, h, w]
    return result


def sample_proposals(
    heads: RoIHeads,
    proposals: Tensor,
    valid: Tensor,
    targets: TargetBatch,
    generator: torch.Generator | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Training samples: (boxes (B, S, 4), labels (B, S), regression targets, valid (B, S)).

    torchvision: `RoIHeads.select_training_samples`. Ground truth joins the proposals, as in
    torchvision; padded slots are never sampled.
    """
    boxes = torch.cat([proposals, targets.boxes.to(proposals.dtype)], dim=1)  # [B, P + G, 4]
    candidates = torch.cat([valid, targets.valid], dim=1)  # batching: [B, P + G]
    matcher = heads.proposal_matcher
    matches = match(
        box_iou(targets.boxes, boxes),  # [B, G, P + G]
        targets.valid,
        matcher.high_threshold,
        matcher.low_threshold,
        allow_low_quality_matches=matcher.allow_low_quality_matches,
    )  # [B, P + G]
    matched = matches.clamp(min=0)  # [B, P + G]
    labels = targets.labels.gather(1, matched)  # [B, P + G]
    labels = labels.masked_fill(matches == BELOW_LOW_THRESHOLD, 0)  # [B, P + G]
    labels = labels.masked_fill((matches == BETWEEN_THRESHOLDS) | ~candidates, -1)  # [B, P + G]
    sampler = heads.fg_bg_sampler
    idx, _, sampled = sample_balanced(
        labels, sampler.batch_size_per_image, sampler.positive_fraction, generator
    )  # [B, S], [B, S]
    sampled_boxes = gather_boxes(boxes, idx)  # [B, S, 4]
    matched_gt = gather_boxes(targets.boxes, matched.gather(1, idx))  # [B, S, 4]
    regression = encode(matched_gt, sampled_boxes, heads.box_coder.weights)  # [B, S, 4]
    return (
        sampled_boxes,
        labels.gather(1, idx),
        regression,
        sampled,
    )  # [B, S, 4], [B, S], [B, S, 4], [B, S]


def box_losses(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: Tensor,
    regression: Tensor,
    sampled: Tensor,
) -> dict[str, Tensor]:
    """torchvision: `roi_heads.fastrcnn_loss`, over the valid samples of the batch."""
    labels, sampled = labels.reshape(-1), sampled.reshape(-1)  # [B * S], [B * S]
    regression = regression.reshape(-1, 4)  # [B * S, 4]
    count = sampled.sum().clamp(min=1)  # batching: padded samples do not count, []
    safe_labels = labels.clamp(min=0)  # batching: padded samples have label -1, [B * S]
    classification = F.cross_entropy(class_logits, safe_labels, reduction="none")  # [B * S]
    classification = (classification * sampled).sum() / count  # []
    positive = sampled & (labels > 0)  # [B * S]
    per_class = box_regression.reshape(labels.shape[0], -1, 4)  # [B * S, K, 4]
    label_index = safe_labels[:, None, None].expand(-1, 1, 4)  # [B * S, 1, 4]
    predicted = per_class.gather(1, label_index)[:, 0]  # [B * S, 4]
    target = torch.where(positive[:, None], regression, predicted.detach())  # [B * S, 4]
    box = F.smooth_l1_loss(predicted, target, beta=SMOOTH_L1_BETA, reduction="none")  # [B * S, 4]
    box = box.sum(dim=1)  # [B * S]
    box_loss = (box * positive).sum() / count  # []
    return {"loss_classifier": classification, "loss_box_reg": box_loss}


def detect(
    heads: RoIHeads,
    class_logits: Tensor,
    box_regression: Tensor,
    proposals: Tensor,
    valid: Tensor,
    batch: ImageBatch,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(boxes, scores, labels, valid), each (B, D, ...), for the batch.

    torchvision: `RoIHeads.postprocess_detections`.
    """
    num_images, count = proposals.shape[:2]
    num_classes = class_logits.shape[-1]
    deltas = box_regression.reshape(num_images, count, num_classes, 4)  # [B, P, K, 4]
    boxes = decode(
        deltas, proposals[:, :, None, :], heads.box_coder.weights, heads.box_coder.bbox_xform_clip
    )  # [B, P, K, 4]
    boxes = clip_to_images(boxes, batch.sizes)[:, :, 1:]  # [B, P, K - 1, 4]
    boxes = boxes.reshape(num_images, -1, 4)  # [B, P * (K - 1), 4]
    scores = F.softmax(class_logits, -1)  # [B * P, K]
    scores = scores.reshape(num_images, count, num_classes)[:, :, 1:]  # [B, P, K - 1]
    scores = scores.reshape(num_images, -1)  # [B, P * (K - 1)]
    labels = torch.arange(1, num_classes, device=boxes.device).repeat(count)  # [P * (K - 1)]
    keep = (
        valid.repeat_interleave(num_classes - 1, dim=1)  # batching: [B, P * (K - 1)]
        & (scores > heads.score_thresh)
        & is_large_enough(boxes, MIN_DETECTION_SIDE)
    )  # [B, P * (K - 1)]
    idx, kept = batched_nms_top_k(
        boxes, scores, labels, num_classes, keep, heads.nms_thresh, heads.detections_per_img
    )  # [B, D], [B, D]
    boxes = gather_boxes(boxes, idx)  # [B, D, 4]
    return boxes, scores.gather(1, idx), labels[idx], kept  # [B, D, 4], [B, D], [B, D], [B, D]


def roi_heads_forward(
    heads: RoIHeads,
    features: dict[str, Tensor],
    proposals: Tensor,
    valid: Tensor,
    batch: ImageBatch,
    targets: TargetBatch | None,
    pool_every_level: bool,
    generator: torch.Generator | None = None,
) -> tuple[tuple[Tensor, Tensor, Tensor, Tensor] | None, dict[str, Tensor]]:
    """Detections (eval) or losses (training) of the box head for the whole batch.

    torchvision: `RoIHeads.forward`.
    """
    if heads.training:
        if targets is None:
            raise ValueError("targets are needed in training mode")
        proposals, labels, regression, valid = sample_proposals(
            heads, proposals, valid, targets, generator
        )  # [B, S, 4], [B, S], [B, S, 4], [B, S]
    if not pool_every_level:
        # Pooling level by level waits on the host anyway: one wait more drops the slots that
        # no image fills (few proposals survive NMS on small images), which would cost pooling
        # and head work (2x the eval time of a 90-class R50-FPN at 320 px).
        used = valid.any(dim=0).nonzero()[:, 0]  # batching: slots some image fills, [S]
        proposals, valid = proposals[:, used], valid[:, used]  # batching: [B, S, 4], [B, S]
        if heads.training:
            labels, regression = labels[:, used], regression[:, used]  # batching: [B, S], [B, S, 4]
    pooled = pool(heads.box_roi_pool, features, proposals, pool_every_level)  # [B * S, Ch, h, w]
    hidden = heads.box_head(pooled)  # [B * S, Ch]
    class_logits, box_regression = heads.box_predictor(hidden)  # [B * S, K], [B * S, K * 4]
    if heads.training:
        return None, box_losses(class_logits, box_regression, labels, regression, valid)
    detections = detect(
        heads, class_logits, box_regression, proposals, valid, batch
    )  # [B, D, 4], [B, D], [B, D], [B, D]
    return detections, {}
