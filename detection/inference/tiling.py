"""Tiled inference for images much larger than the training size: windows and merging."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchvision.ops import batched_nms

Window = tuple[int, int, int, int]  # x0, y0, x1, y1 in full-image pixels
# The model resizes every tile to its input size (min_size). A tile below a quarter of it is
# enlarged more than 4x, far from anything the model saw in training, and cuts an image into
# very many windows: --tile 8 on 96 px images made 529 tiles an image and ran for minutes.
MAX_TILE_ENLARGEMENT = 4
TORCHVISION_MIN_SIZE = 800  # torchvision's default min_size, when a model does not set one


def model_input_size(model_args: Mapping[str, Any]) -> int:
    """The short side a model resizes its inputs to at inference (its last min_size)."""
    size = model_args.get("min_size", TORCHVISION_MIN_SIZE)
    if isinstance(size, Sequence) and not isinstance(size, str):
        size = size[-1] if size else TORCHVISION_MIN_SIZE
    return int(size)


def smallest_tile(model_args: Mapping[str, Any]) -> int:
    """The smallest tile `check_tile` accepts for a model: a quarter of its input size."""
    return math.ceil(model_input_size(model_args) / MAX_TILE_ENLARGEMENT)


def check_tile(tile: int | None, model_args: Mapping[str, Any]) -> None:
    """Refuse a tile far below the model's input size (see MAX_TILE_ENLARGEMENT).

    Raises:
        ValueError: `tile` is below `smallest_tile(model_args)`, naming both.
    """
    if tile is None:
        return
    smallest = smallest_tile(model_args)
    if tile < smallest:
        size = model_input_size(model_args)
        raise ValueError(
            f"tile {tile} is far below the model's input size ({size} px): every tile would be "
            f"enlarged {size / tile:.0f}x and an image cut into very many tiles; use a tile of "
            f"at least {smallest} px (a quarter of the input size), or no tiling"
        )


def _starts(length: int, tile: int, stride: int) -> list[int]:
    """Window starts along one axis: regular steps, the last one flush with the far edge."""
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def tile_windows(width: int, height: int, tile: int, overlap: float) -> list[Window]:
    """Overlapping `tile` x `tile` windows covering a width x height image, row by row.

    Neighbours overlap by at least `overlap` of a tile, so an object smaller than the overlap is
    whole in some window. An image no larger than a tile is one window.
    """
    if tile < 1:
        raise ValueError(f"tile must be a positive size in pixels, got {tile}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    stride = max(1, int(tile * (1.0 - overlap)))
    return [
        (x, y, min(x + tile, width), min(y + tile, height))
        for y in _starts(height, tile, stride)
        for x in _starts(width, tile, stride)
    ]


def merge_detections(
    boxes: Sequence[torch.Tensor],
    scores: Sequence[torch.Tensor],
    labels: Sequence[torch.Tensor],
    windows: Sequence[Window],
    iou_threshold: float,
    max_detections: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shift each window's detections to full-image coordinates and merge them by class-wise NMS.

    Returns (boxes xyxy, scores, labels) sorted by decreasing score, at most `max_detections`.
    """
    if not (len(boxes) == len(scores) == len(labels) == len(windows)):
        raise ValueError("boxes, scores, labels and windows must have one entry per window")
    shifted = []
    for window_boxes, (x0, y0, _, _) in zip(boxes, windows, strict=True):
        offset = torch.tensor(
            [x0, y0, x0, y0], dtype=window_boxes.dtype, device=window_boxes.device
        )
        shifted.append(window_boxes + offset)
    all_boxes = torch.cat(shifted)
    all_scores = torch.cat(list(scores))
    all_labels = torch.cat(list(labels))
    # Overlapping windows see the same object twice; NMS within each class keeps the best copy.
    keep = batched_nms(all_boxes, all_scores, all_labels, iou_threshold)[:max_detections]
    return all_boxes[keep], all_scores[keep], all_labels[keep]
