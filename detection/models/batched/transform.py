"""Images and targets to padded batch tensors, and detections back to original pixels.

torchvision's GeneralizedRCNNTransform rules (normalize, resize so the short side is `min_size`
unless the long side would pass `max_size`, zero-pad to a multiple of `size_divisible`), with the
targets padded into (B, G) tensors and small per-batch tensors copied without a host sync.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.models.detection.transform import GeneralizedRCNNTransform


@dataclass
class ImageBatch:
    """Normalized images, zero-padded into one tensor, and each image's size in it."""

    tensors: Tensor  # (B, C, H, W)
    image_sizes: list[tuple[int, int]]  # (height, width) of each resized image
    sizes: Tensor  # the same sizes as a (B, 2) int64 tensor on the images' device


@dataclass
class TargetBatch:
    """Ground truth padded to the largest count in the batch (at least one slot)."""

    boxes: Tensor  # (B, G, 4) xyxy in resized pixels, zeros where padded
    labels: Tensor  # (B, G) int64, -1 where padded

    @property
    def valid(self) -> Tensor:
        """(B, G) True for real ground truth."""
        return self.labels >= 0  # [B, G]


def to_device(values: Sequence, device: torch.device, dtype: torch.dtype) -> Tensor:
    """A small host list as a device tensor; on CUDA through pinned memory, without a sync."""
    tensor = torch.tensor(values, dtype=dtype)  # [...]
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)  # [...]
    return tensor.to(device)  # [...]


def resize_ratio(new: int, old: int) -> float:
    """new / old in float32, as torchvision divides two float32 scalars to scale boxes."""
    return float(np.float32(new) / np.float32(old))


def resized_image(image: Tensor, min_size: int, max_size: int) -> Tensor:
    """Bilinear resize so the short side is `min_size`, the long side at most `max_size`.

    torchvision: `transform._resize_image_and_masks`.
    """
    height, width = image.shape[-2:]
    scale = min(min_size / min(height, width), max_size / max(height, width))
    return F.interpolate(
        image[None],  # [1, Ch, H, W]
        scale_factor=scale,
        mode="bilinear",
        recompute_scale_factor=True,
        align_corners=False,
    )[0]  # [Ch, H, W]


def choose_min_size(transform: GeneralizedRCNNTransform, training: bool) -> int:
    """A random scale of the min_size list in training (torch RNG, as torchvision), else the last.

    torchvision: `GeneralizedRCNNTransform.torch_choice`.
    """
    sizes = transform.min_size
    if not training or len(sizes) == 1:
        return sizes[-1]
    draw = torch.empty(1).uniform_(0.0, float(len(sizes)))  # [1]
    return sizes[int(draw.item())]


def batch_images(
    transform: GeneralizedRCNNTransform,
    images: Sequence[Tensor],
    mean: Tensor,
    std: Tensor,
    training: bool,
    pad_multiple: int,
) -> ImageBatch:
    """Normalize, resize and zero-pad `images` (each (C, H, W) float) to a multiple of
    `pad_multiple` pixels, into an ImageBatch.

    torchvision: `GeneralizedRCNNTransform.forward` (`normalize`, `resize`, `batch_images`) for
    the images.
    """
    resized = []
    for image in images:
        if image.dim() != 3:
            raise ValueError(f"images must be [C, H, W] tensors, got shape {tuple(image.shape)}")
        if not image.is_floating_point():
            raise TypeError(f"images must be float in [0, 1], got {image.dtype}")
        normalized = (image - mean[:, None, None]) / std[:, None, None]  # [Ch, H, W]
        size = choose_min_size(transform, training)
        resized.append(resized_image(normalized, size, transform.max_size))  # [Ch, H, W]
    stride = float(pad_multiple)
    height = int(math.ceil(max(r.shape[-2] for r in resized) / stride) * stride)
    width = int(math.ceil(max(r.shape[-1] for r in resized) / stride) * stride)
    channels = resized[0].shape[0]
    tensors = resized[0].new_zeros((len(resized), channels, height, width))  # [B, Ch, H, W]
    for i, image in enumerate(resized):
        tensors[i, :, : image.shape[-2], : image.shape[-1]].copy_(image)  # batching: [B, Ch, H, W]
    image_sizes = [(int(r.shape[-2]), int(r.shape[-1])) for r in resized]
    sizes = to_device(image_sizes, tensors.device, torch.int64)  # [B, 2]
    return ImageBatch(tensors, image_sizes, sizes)


def size_ratios(
    old_sizes: Sequence[tuple[int, int]], new_sizes: Sequence[tuple[int, int]], device: torch.device
) -> Tensor:
    """(B, 1, 4) factors that map xyxy boxes from `old_sizes` to `new_sizes` (float32).

    torchvision: the ratios of `transform.resize_boxes`.
    """
    ratios = []
    for (old_h, old_w), (new_h, new_w) in zip(old_sizes, new_sizes, strict=True):
        rw, rh = resize_ratio(new_w, old_w), resize_ratio(new_h, old_h)
        ratios.append([[rw, rh, rw, rh]])
    return to_device(ratios, device, torch.float32)  # [B, 1, 4]


def batch_targets(
    targets: Sequence[dict[str, Tensor]],
    original_sizes: Sequence[tuple[int, int]],
    batch: ImageBatch,
) -> TargetBatch:
    """Pad each image's boxes and labels, and scale the boxes to the resized images.

    torchvision: `GeneralizedRCNNTransform.resize` for the targets (`resize_boxes`).
    """
    device = batch.tensors.device
    count = max(1, max(len(t["boxes"]) for t in targets))  # batching: at least one slot
    shape = (len(targets), count)
    boxes = torch.zeros((*shape, 4), dtype=torch.float32, device=device)  # batching: [B, G, 4]
    labels = torch.full(shape, -1, dtype=torch.int64, device=device)  # batching: [B, G]
    for i, target in enumerate(targets):
        n = len(target["boxes"])
        if n:
            boxes[i, :n] = target["boxes"]  # batching: [B, G, 4]
            labels[i, :n] = target["labels"]  # batching: [B, G]
    boxes = boxes * size_ratios(original_sizes, batch.image_sizes, device)  # [B, G, 4]
    return TargetBatch(boxes, labels)


def unbatch_detections(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    valid: Tensor,
    batch: ImageBatch,
    original_sizes: Sequence[tuple[int, int]],
) -> list[dict[str, Tensor]]:
    """Per-image detection dicts in original pixels (one host sync: the counts per image).

    torchvision: `GeneralizedRCNNTransform.postprocess`.
    """
    boxes = boxes * size_ratios(batch.image_sizes, original_sizes, boxes.device)  # [B, D, 4]
    counts = valid.sum(dim=1)  # batching: [B]
    return [
        {"boxes": boxes[i, :n], "labels": labels[i, :n], "scores": scores[i, :n]}
        for i, n in enumerate(counts.tolist())
    ]  # B x {[D, 4], [D], [D]}
