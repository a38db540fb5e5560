"""Box arithmetic over padded batches, written op for op like torchvision's so results match bit
for bit: IoU, encoding and decoding against reference boxes, clipping to per-image sizes."""

from __future__ import annotations

import torch
from torch import Tensor

# torchvision's bare constants, named where they are used here:
# smooth L1's beta in both box losses (`RegionProposalNetwork.compute_loss`, `fastrcnn_loss`);
SMOOTH_L1_BETA = 1 / 9
# the smallest detection side (`RoIHeads.postprocess_detections`: `remove_small_boxes(boxes,
# min_size=1e-2)`);
MIN_DETECTION_SIDE = 1e-2
# the FPN level mapper's epsilon (`poolers.LevelMapper`, eps=1e-6).
LEVEL_MAPPER_EPS = 1e-6


def gather_boxes(boxes: Tensor, index: Tensor) -> Tensor:
    """Rows `index` (B, K) of per-image boxes (B, N, 4): (B, K, 4)."""
    return boxes.gather(1, index[..., None].expand(-1, -1, 4))  # [B, K, 4]


def box_area(boxes: Tensor) -> Tensor:
    """Areas of xyxy boxes of any leading shape. torchvision: `box_ops.box_area`."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])  # [...]


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of (B, M, 4) against (B, N, 4) or (N, 4) boxes: (B, M, N). torchvision: `box_iou`."""
    if boxes2.dim() == 2:
        boxes2 = boxes2[None]  # [1, N, 4]
    area1 = box_area(boxes1)  # [B, M]
    area2 = box_area(boxes2)  # [B, N]
    lt = torch.max(boxes1[:, :, None, :2], boxes2[:, None, :, :2])  # [B, M, N, 2]
    rb = torch.min(boxes1[:, :, None, 2:], boxes2[:, None, :, 2:])  # [B, M, N, 2]
    wh = (rb - lt).clamp(min=0)  # [B, M, N, 2]
    inter = wh[..., 0] * wh[..., 1]  # [B, M, N]
    union = area1[:, :, None] + area2[:, None, :] - inter  # [B, M, N]
    return inter / union  # [B, M, N]


def encode(
    reference: Tensor, proposals: Tensor, weights: tuple[float, float, float, float]
) -> Tensor:
    """Regression targets of `reference` boxes relative to `proposals` (broadcasting shapes).

    torchvision: `BoxCoder.encode_single`.
    """
    wx, wy, ww, wh = weights
    ex_widths = proposals[..., 2] - proposals[..., 0]  # [...]
    ex_heights = proposals[..., 3] - proposals[..., 1]  # [...]
    ex_ctr_x = proposals[..., 0] + 0.5 * ex_widths  # [...]
    ex_ctr_y = proposals[..., 1] + 0.5 * ex_heights  # [...]

    gt_widths = reference[..., 2] - reference[..., 0]  # [...]
    gt_heights = reference[..., 3] - reference[..., 1]  # [...]
    gt_ctr_x = reference[..., 0] + 0.5 * gt_widths  # [...]
    gt_ctr_y = reference[..., 1] + 0.5 * gt_heights  # [...]

    dx = wx * (gt_ctr_x - ex_ctr_x) / ex_widths  # [...]
    dy = wy * (gt_ctr_y - ex_ctr_y) / ex_heights  # [...]
    dw = ww * torch.log(gt_widths / ex_widths)  # [...]
    dh = wh * torch.log(gt_heights / ex_heights)  # [...]
    return torch.stack((dx, dy, dw, dh), dim=-1)  # [..., 4]


def decode(
    deltas: Tensor, boxes: Tensor, weights: tuple[float, float, float, float], clip: float
) -> Tensor:
    """Boxes from regression `deltas` (..., 4) relative to broadcastable reference `boxes`.

    torchvision: `BoxCoder.decode_single`.
    """
    boxes = boxes.to(deltas.dtype)  # [..., 4]
    widths = boxes[..., 2] - boxes[..., 0]  # [...]
    heights = boxes[..., 3] - boxes[..., 1]  # [...]
    ctr_x = boxes[..., 0] + 0.5 * widths  # [...]
    ctr_y = boxes[..., 1] + 0.5 * heights  # [...]

    wx, wy, ww, wh = weights
    dx = deltas[..., 0] / wx  # [...]
    dy = deltas[..., 1] / wy  # [...]
    dw = torch.clamp(deltas[..., 2] / ww, max=clip)  # [...]
    dh = torch.clamp(deltas[..., 3] / wh, max=clip)  # [...]

    pred_ctr_x = dx * widths + ctr_x  # [...]
    pred_ctr_y = dy * heights + ctr_y  # [...]
    half_w = 0.5 * (torch.exp(dw) * widths)  # [...]
    half_h = 0.5 * (torch.exp(dh) * heights)  # [...]
    x1, y1 = pred_ctr_x - half_w, pred_ctr_y - half_h  # [...], [...]
    x2, y2 = pred_ctr_x + half_w, pred_ctr_y + half_h  # [...], [...]
    return torch.stack((x1, y1, x2, y2), dim=-1)  # [..., 4]


def clip_to_images(boxes: Tensor, sizes: Tensor) -> Tensor:
    """Clip (B, ..., 4) boxes to each image's (height, width) in `sizes` (B, 2).

    torchvision: `box_ops.clip_boxes_to_image`.
    """
    shape = (sizes.shape[0],) + (1,) * (boxes.dim() - 2)
    height = sizes[:, 0].to(boxes.dtype).view(shape)  # [B, ...]
    width = sizes[:, 1].to(boxes.dtype).view(shape)  # [B, ...]
    zero = boxes.new_zeros(())  # []
    x = torch.minimum(torch.maximum(boxes[..., 0::2], zero), width[..., None])  # [B, ..., 2]
    y = torch.minimum(torch.maximum(boxes[..., 1::2], zero), height[..., None])  # [B, ..., 2]
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)  # [B, ..., 4]


def is_large_enough(boxes: Tensor, min_size: float) -> Tensor:
    """True where both sides of a box reach `min_size`.

    torchvision: `box_ops.remove_small_boxes`, as a mask instead of the kept indices.
    """
    widths = boxes[..., 2] - boxes[..., 0]  # [...]
    heights = boxes[..., 3] - boxes[..., 1]  # [...]
    return (widths >= min_size) & (heights >= min_size)  # [...]
