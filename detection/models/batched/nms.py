"""Non-maximum suppression for a whole batch with a fixed-size output per image: torchvision's
`nms` per image and group over the batch's valid candidates, or greedy NMS as batched tensor
work (the RPN's GPU path)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import nms

from detection.models.batched.boxes import gather_boxes
from detection.models.batched.ranking import order_stable


def first_k_per_image(kept: Tensor, image: Tensor, num_images: int, k: int) -> Tensor:
    """The first `k` entries of `kept` per image, in their order: (num_images, k), -1 padded.

    `kept` holds flat candidate indices sorted by decreasing score and `image` the image of each.
    A stable sort by image keeps the score order inside an image; ranks come from a cumulative
    count, so the per-image cut needs no host round trip.
    """
    order = torch.sort(image, stable=True).indices  # [V]
    kept, image = kept[order], image[order]  # [V], [V]
    counts = torch.zeros(num_images, dtype=torch.int64, device=kept.device)  # [B]
    counts.scatter_add_(0, image, torch.ones_like(image))  # [B]
    starts = counts.cumsum(0) - counts  # [B]
    rank = torch.arange(kept.numel(), device=kept.device) - starts[image]  # [V]
    dump = num_images * k  # one spare slot takes everything beyond the first k
    slot = torch.where(rank < k, image * k + rank, torch.full_like(rank, dump))  # [V]
    out = torch.full((dump + 1,), -1, dtype=torch.int64, device=kept.device)  # [B * T + 1]
    out.scatter_(0, slot, kept)  # [B * T + 1]
    return out[:dump].view(num_images, k)  # [B, T]


def grouped_nms(
    boxes: Tensor, scores: Tensor, keys: Tensor, iou_threshold: float, one_call: bool | None = None
) -> Tensor:
    """torchvision: `ops.batched_nms`. NMS among the boxes of each key, kept indices by decreasing
    score; no pair of boxes with different keys is compared.

    Equal scores: the lower index outranks.

    `one_call` (None: on CUDA up to 20,000 boxes, torchvision's own limit): one `nms` over boxes
    moved apart by key (float64 offsets, exact), one sync; otherwise one `nms` per key over the
    key-sorted boxes (one sort, where torchvision's loop scans every box once per key: 8x slower
    at 4 images x 90 classes).
    """
    if one_call is None:
        one_call = boxes.is_cuda and len(boxes) <= 20_000
    # Equal scores: the lower index outranks. `nms` orders by score with its own sort, so it is
    # given each box's rank (distinct values, same order as the scores where they differ; exact
    # in float32 up to 2**24 boxes).
    rank = torch.empty_like(keys, dtype=torch.float64)  # [N]
    ranks = -torch.arange(len(scores), device=scores.device).double()  # [N]
    rank[order_stable(scores)] = ranks  # [N]
    if one_call:
        boxes = boxes.double()  # [N, 4]
        span = boxes.max().clamp(min=0) + 1 if len(boxes) else boxes.new_ones(())  # []
        apart = boxes + (keys.double() * span)[:, None]  # [N, 4]
        return nms(apart, rank, iou_threshold)  # [V]
    order = torch.sort(keys, stable=True).indices  # [N]
    counts = torch.unique_consecutive(keys[order], return_counts=True)[1]  # [U]
    kept = [
        segment[nms(boxes[segment], rank[segment].to(boxes.dtype), iou_threshold)]
        for segment in order.split(counts.tolist())
    ]  # U x [V]
    kept = torch.cat(kept) if kept else order  # [V]
    return kept[order_stable(rank[kept])]  # [V]


def batched_nms_top_k(
    boxes: Tensor,
    scores: Tensor,
    groups: Tensor,
    num_groups: int,
    valid: Tensor,
    iou_threshold: float,
    k: int,
) -> tuple[Tensor, Tensor]:
    """NMS within each (image, group), then the `k` best survivors per image.

    torchvision: `box_ops.batched_nms` then `keep[:k]`, per image, as in
    `RegionProposalNetwork.filter_proposals` and `RoIHeads.postprocess_detections`.
    boxes (B, N, 4), scores (B, N), groups (B, N) or (N,) int64 below `num_groups` (e.g. FPN
    level or class), valid (B, N). Returns (indices into N, (B, k); valid (B, k)). Only valid
    candidates take part (one `nonzero`); `grouped_nms` keys them by image and group.
    """
    num_images, count = scores.shape
    groups = groups.expand(num_images, count)  # [B, N]
    image = torch.arange(num_images, device=boxes.device)[:, None]  # [B, 1]
    image = image.expand(num_images, count)  # [B, N]
    keys = (image * num_groups + groups).reshape(-1)  # [B * N]
    candidates = valid.reshape(-1).nonzero()[:, 0]  # batching: only valid slots, [V]
    # Autocast would run nms in float16/32, not in the boxes' own precision.
    with torch.autocast(boxes.device.type, enabled=False):
        kept = grouped_nms(
            boxes.reshape(-1, 4)[candidates].float(),  # [V, 4]
            scores.reshape(-1)[candidates].float(),  # [V]
            keys[candidates],  # [V]
            iou_threshold,
        )  # [V]
    kept = candidates[kept]  # [V]
    kept_image = torch.div(kept, count, rounding_mode="floor")  # [V]
    top = first_k_per_image(kept, kept_image, num_images, k)  # [B, T]
    ok = top >= 0  # batching: [B, T]
    local = torch.where(ok, top - image[:, :1] * count, torch.zeros_like(top))  # [B, T]
    return local, ok


def overlaps_above(boxes: Tensor, iou_threshold: float) -> Tensor:
    """(R, N, N) bool: IoU of each pair of boxes within a row of (R, N, 4) above the threshold.

    torchvision's nms arithmetic (inter / (area_i + area_j - inter) > threshold), in place:
    at most three R x N x N float temporaries alive, where box_iou holds (R, N, N, 2) corners.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)  # [R, N], [R, N], [R, N], [R, N]
    area = (x2 - x1) * (y2 - y1)  # [R, N]
    width = torch.minimum(x2[:, :, None], x2[:, None, :])  # [R, N, N]
    width.sub_(torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(min=0)  # [R, N, N]
    height = torch.minimum(y2[:, :, None], y2[:, None, :])  # [R, N, N]
    height.sub_(torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(min=0)  # [R, N, N]
    inter = width.mul_(height)  # [R, N, N]
    del height
    union = area[:, :, None] + area[:, None, :]  # [R, N, N]
    return inter.div_(union.sub_(inter)) > iou_threshold  # [R, N, N]


def fixpoint_nms_keep(
    boxes: Tensor,
    scores: Tensor,
    valid: Tensor,
    iou_threshold: float,
    check_every: int = 4,
    pairs_per_chunk: int = 1 << 26,
) -> Tensor:
    """Greedy NMS inside each row of (R, N) candidates, computed with tensor ops: (R, N) keep mask.

    torchvision: `ops.nms`, on every row at once, with its result: a box survives when no
    surviving box of higher score overlaps it by more than `iou_threshold`. With S[j, i] "j
    outranks and overlaps i", the survivors are the one fixpoint of keep_i = valid_i and not
    any_j(S[j, i] and keep_j); iterating from keep = valid reaches it in at most (longest
    suppression chain + 1) rounds, each one batched matrix product. The host looks only every
    `check_every` rounds (one sync per look), so a GPU runs the usual 5-20 rounds with a few
    syncs instead of one per image and level.
    Memory is R x N x N (at N = 2000 and R = 40: 320 MB in float16), so this is the GPU path.
    """
    groups, count = scores.shape
    # batching: invalid slots rank last and start dead.
    ranked = torch.where(valid, scores, torch.full_like(scores, float("-inf")))  # [R, N]
    order = order_stable(ranked, dim=1)  # ties: the lower index outranks, [R, N]
    # float32 like torchvision's nms under autocast: fp16 IoUs would round differently.
    ordered = gather_boxes(boxes.float(), order)  # [R, N, 4]
    alive = valid.gather(1, order)  # batching: [R, N]
    # float16 sums of 0/1 only need to stay above 0; CPU matmuls want float32.
    dtype = torch.float16 if boxes.is_cuda else torch.float32
    earlier = torch.ones(count, count, dtype=torch.bool, device=boxes.device).triu(1)  # [N, N]
    shape = (groups, count, count)
    suppresses = torch.empty(shape, dtype=dtype, device=boxes.device)  # [R, N, N]
    # Chunks of `pairs_per_chunk` bound the IoU temporaries (three float32 ones: 768 MB by
    # default), in few chunks (at N = 2000: two up to batch 6 x 5 levels) that hardly add ops
    # per image.
    chunk = max(1, pairs_per_chunk // max(1, count * count))
    for start in range(0, groups, chunk):
        overlaps = overlaps_above(ordered[start : start + chunk], iou_threshold)  # [R, N, N]
        suppresses[start : start + chunk] = overlaps.logical_and_(earlier)  # [R, N, N]
    keep = alive  # [R, N]
    for step in range(count):
        suppressed = torch.bmm(keep[:, None, :].to(dtype), suppresses)[:, 0] > 0  # [R, N]
        updated = alive & ~suppressed  # [R, N]
        if (step + 1) % check_every == 0 and torch.equal(updated, keep):
            break
        keep = updated  # [R, N]
    return torch.zeros_like(keep).scatter_(1, order, keep)  # [R, N]
