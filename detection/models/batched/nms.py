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
    order = torch.sort(image, stable=True).indices
    kept, image = kept[order], image[order]
    counts = torch.zeros(num_images, dtype=torch.int64, device=kept.device)
    counts.scatter_add_(0, image, torch.ones_like(image))
    starts = counts.cumsum(0) - counts
    rank = torch.arange(kept.numel(), device=kept.device) - starts[image]
    dump = num_images * k  # one spare slot takes everything beyond the first k
    slot = torch.where(rank < k, image * k + rank, torch.full_like(rank, dump))
    out = torch.full((dump + 1,), -1, dtype=torch.int64, device=kept.device)
    out.scatter_(0, slot, kept)
    return out[:dump].view(num_images, k)


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
    rank = torch.empty_like(keys, dtype=torch.float64)
    rank[order_stable(scores)] = -torch.arange(len(scores), device=scores.device).double()
    if one_call:
        boxes = boxes.double()
        span = boxes.max().clamp(min=0) + 1 if len(boxes) else boxes.new_ones(())
        return nms(boxes + (keys.double() * span)[:, None], rank, iou_threshold)
    order = torch.sort(keys, stable=True).indices
    counts = torch.unique_consecutive(keys[order], return_counts=True)[1].tolist()
    kept = [
        segment[nms(boxes[segment], rank[segment].to(boxes.dtype), iou_threshold)]
        for segment in order.split(counts)
    ]
    kept = torch.cat(kept) if kept else order
    return kept[order_stable(rank[kept])]


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

    boxes (B, N, 4), scores (B, N), groups (B, N) or (N,) int64 below `num_groups` (e.g. FPN
    level or class), valid (B, N). Returns (indices into N, (B, k); valid (B, k)). Only valid
    candidates take part (one `nonzero`); `grouped_nms` keys them by image and group.
    """
    num_images, count = scores.shape
    groups = groups.expand(num_images, count)
    image = torch.arange(num_images, device=boxes.device)[:, None].expand(num_images, count)
    keys = (image * num_groups + groups).reshape(-1)
    candidates = valid.reshape(-1).nonzero()[:, 0]  # batching: only valid slots, [V]
    # Autocast would run nms in float16/32, not in the boxes' own precision.
    with torch.autocast(boxes.device.type, enabled=False):
        kept = grouped_nms(
            boxes.reshape(-1, 4)[candidates].float(),
            scores.reshape(-1)[candidates].float(),
            keys[candidates],
            iou_threshold,
        )
    kept = candidates[kept]
    top = first_k_per_image(kept, torch.div(kept, count, rounding_mode="floor"), num_images, k)
    ok = top >= 0
    local = torch.where(ok, top - image[:, :1] * count, torch.zeros_like(top))
    return local, ok


def overlaps_above(boxes: Tensor, iou_threshold: float) -> Tensor:
    """(G, K, K) bool: IoU of each pair of boxes within a row of (G, K, 4) above the threshold.

    torchvision's nms arithmetic (inter / (area_i + area_j - inter) > threshold), in place:
    at most three G x K x K float temporaries alive, where box_iou holds (G, K, K, 2) corners.
    """
    x1, y1, x2, y2 = boxes.unbind(-1)
    area = (x2 - x1) * (y2 - y1)
    width = torch.minimum(x2[:, :, None], x2[:, None, :])
    width.sub_(torch.maximum(x1[:, :, None], x1[:, None, :])).clamp_(min=0)
    height = torch.minimum(y2[:, :, None], y2[:, None, :])
    height.sub_(torch.maximum(y1[:, :, None], y1[:, None, :])).clamp_(min=0)
    inter = width.mul_(height)
    del height
    union = area[:, :, None] + area[:, None, :]
    return inter.div_(union.sub_(inter)) > iou_threshold


def fixpoint_nms_keep(
    boxes: Tensor,
    scores: Tensor,
    valid: Tensor,
    iou_threshold: float,
    check_every: int = 4,
    pairs_per_chunk: int = 1 << 26,
) -> Tensor:
    """Greedy NMS inside each row of (G, K) candidates, computed with tensor ops: (G, K) keep mask.

    The result is torchvision's: a box survives when no surviving box of higher score overlaps
    it by more than `iou_threshold`. With S[j, i] "j outranks and overlaps i", the survivors are
    the one fixpoint of keep_i = valid_i and not any_j(S[j, i] and keep_j); iterating from
    keep = valid reaches it in at most (longest suppression chain + 1) rounds, each one batched
    matrix product. The host looks only every `check_every` rounds (one sync per look), so a
    GPU runs the usual 5-20 rounds with a few syncs instead of one per image and level.
    Memory is G x K x K (at K = 2000 and G = 40: 320 MB in float16), so this is the GPU path.
    """
    groups, count = scores.shape
    ranked = torch.where(valid, scores, torch.full_like(scores, float("-inf")))
    order = order_stable(ranked, dim=1)  # ties: the lower index outranks
    # float32 like torchvision's nms under autocast: fp16 IoUs would round differently.
    ordered = gather_boxes(boxes.float(), order)  # [G, K, 4]
    alive = valid.gather(1, order)
    # float16 sums of 0/1 only need to stay above 0; CPU matmuls want float32.
    dtype = torch.float16 if boxes.is_cuda else torch.float32
    earlier = torch.ones(count, count, dtype=torch.bool, device=boxes.device).triu(1)
    suppresses = torch.empty((groups, count, count), dtype=dtype, device=boxes.device)
    # Chunks of `pairs_per_chunk` bound the IoU temporaries (three float32 ones: 768 MB by
    # default), in few chunks (at K = 2000: two up to batch 6 x 5 levels) that hardly add ops
    # per image.
    chunk = max(1, pairs_per_chunk // max(1, count * count))
    for start in range(0, groups, chunk):
        overlaps = overlaps_above(ordered[start : start + chunk], iou_threshold)
        suppresses[start : start + chunk] = overlaps.logical_and_(earlier)
    keep = alive
    for step in range(count):
        suppressed = torch.bmm(keep[:, None, :].to(dtype), suppresses)[:, 0] > 0
        updated = alive & ~suppressed
        if (step + 1) % check_every == 0 and torch.equal(updated, keep):
            break
        keep = updated
    return torch.zeros_like(keep).scatter_(1, order, keep)
