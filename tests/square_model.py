"""Test helpers for inference: checkpoints, and a tiny model trained to find bright squares.

The fixtures built on them (`square_checkpoint`, `single_thread`) live in conftest.py.

Training takes one to two minutes on two busy cores, so the checkpoint is cached in pytest's cache
folder, keyed by the recipe and the torch versions; later runs load it in a second.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision

from detection.core.thresholds import Thresholds
from detection.models.checkpoint import CheckpointMeta
from detection.models.faster_rcnn import DEFAULT_IMPL, build_model

# Small proposal counts make the box head cheap: that head, not the backbone, dominates CPU time
# on tiny images with torchvision's defaults.
MODEL_ARGS: dict[str, Any] = {
    "min_size": 64,
    "max_size": 64,
    "rpn_pre_nms_top_n_train": 200,
    "rpn_post_nms_top_n_train": 100,
    "rpn_pre_nms_top_n_test": 100,
    "rpn_post_nms_top_n_test": 50,
    "rpn_batch_size_per_image": 64,
    "box_batch_size_per_image": 32,
}
MODEL_NAME = "fasterrcnn_resnet18_fpn"
CLASS_NAMES = ["square"]
CATEGORY_IDS = [7]  # not 1, so a test sees that category ids are mapped, not copied
RECIPE = {"size": 64, "steps": 300, "batch": 2, "lr": 2e-3, "seed": 0, "negatives": 0.25}


def make_meta(thresholds: dict[str, float] | None = None) -> CheckpointMeta:
    """Metadata of the square detector."""
    return CheckpointMeta(
        model_name=MODEL_NAME,
        num_classes=len(CLASS_NAMES),
        class_names=list(CLASS_NAMES),
        category_ids=list(CATEGORY_IDS),
        model_args=dict(MODEL_ARGS),
        thresholds=Thresholds(0.5, thresholds if thresholds is not None else {"square": 0.5}),
    )


def build_square_model() -> torch.nn.Module:
    """The untrained architecture of the square detector."""
    return build_model(MODEL_NAME, len(CLASS_NAMES), **MODEL_ARGS)


def save_checkpoint(model: torch.nn.Module, meta: CheckpointMeta, path: str | Path) -> Path:
    """Write a checkpoint the way DetectionModule does (Lightning layout + 'detection' meta)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model." + k: v for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"state_dict": state, "detection": meta.to_dict()}, tmp)
    tmp.replace(path)
    return path


def square_image(
    rng: np.random.Generator, width: int, height: int, squares: int = 1, size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Dark noise with bright squares: (RGB uint8 HxWx3, boxes (n, 4) xyxy)."""
    image = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    boxes = []
    for _ in range(squares):
        side = size or int(rng.integers(RECIPE["size"] // 5, RECIPE["size"] // 3))
        x = int(rng.integers(0, width - side))
        y = int(rng.integers(0, height - side))
        image[y : y + side, x : x + side] = rng.integers(200, 256, size=3, dtype=np.uint8)
        boxes.append([x, y, x + side, y + side])
    return image, np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def paint_square(image: np.ndarray, x: int, y: int, side: int) -> np.ndarray:
    """Paint a bright square with top-left (x, y) into `image` in place; returns its box."""
    image[y : y + side, x : x + side] = 230
    return np.array([x, y, x + side, y + side], dtype=np.float32)


def train_square_model() -> torch.nn.Module:
    """Train the detector to find one bright square on dark noise (300 steps, 1-2 minutes)."""
    torch.manual_seed(RECIPE["seed"])
    rng = np.random.default_rng(RECIPE["seed"])
    model = build_square_model().train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], RECIPE["lr"])
    # Warmup, then cosine decay to zero: the low final rate settles the box regression, so the
    # model localises well on every torch/torchvision version rather than just above a bar.
    steps = RECIPE["steps"]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * step / steps)),
    )
    # One thread: with other jobs on the two cores, a second OpenMP thread mostly waits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(RECIPE["steps"]):
            images, targets = [], []
            for _ in range(RECIPE["batch"]):
                negative = rng.random() < RECIPE["negatives"]
                size = RECIPE["size"]
                image, boxes = square_image(rng, size, size, squares=0 if negative else 1)
                images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255)
                targets.append(
                    {
                        "boxes": torch.from_numpy(boxes),
                        "labels": torch.ones(len(boxes), dtype=torch.int64),
                    }
                )
            loss = sum(model(images, targets).values())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            schedule.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def trained_checkpoint(cache_dir: Path) -> Path:
    """The trained square detector's checkpoint, trained once per recipe and torch version."""
    key = json.dumps(
        [RECIPE, MODEL_ARGS, MODEL_NAME, DEFAULT_IMPL, torch.__version__, torchvision.__version__],
        sort_keys=True,
    )
    path = cache_dir / f"squares-{hashlib.sha1(key.encode()).hexdigest()[:12]}.ckpt"
    if not path.exists():
        save_checkpoint(train_square_model(), make_meta(), path)
    return path
