"""Ops dispatched by one training step, and how many of them make the host wait for a GPU.

    python scripts/count_ops.py --out results/count_ops.json

Counts aten (and torchvision) ops of one forward + backward pass with torch.profiler on the
CPU, for each implementation (`batched`, `torchvision`) at two batch sizes, on the same random
images and targets. On CUDA these ops wait for the device (a host-device sync): nonzero,
item / _local_scalar_dense, is_nonzero, unique, equal, and torchvision's nms (its output size is
only known on the device). Ops per extra image = (ops at the larger batch - ops at the smaller) /
(difference in images): the per-image Python loops show there.

The batched model is counted as it runs on CUDA (pool_every_level and fixpoint_nms on); on a
CPU it pools level by level (one nonzero per FPN level) and runs torchvision's nms per image and
level; a CPU does not wait on a device.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from detection import build_model
from detection.models.op_count import count_training_step, sync_ops


def batch(size: int, count: int, seed: int) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """`count` random images of `size` px with three boxes each (one image without any)."""
    generator = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=generator) for _ in range(count)]
    targets = []
    for index in range(count):
        boxes = torch.rand(3, 2, generator=generator) * size * 0.6
        boxes = torch.cat([boxes, boxes + size * 0.3], dim=1)
        labels = torch.randint(1, 4, (3,), generator=generator)
        if index == count - 1:  # a defect-free image, as inspection data has
            boxes, labels = boxes[:0], labels[:0]
        targets.append({"boxes": boxes, "labels": labels})
    return images, targets


def measure(args: argparse.Namespace, impl: str, count: int) -> dict[str, Any]:
    """Op and sync counts of one training step of `impl` at batch `count`."""
    torch.manual_seed(0)
    model = build_model(args.model, 3, impl=impl, min_size=args.size, max_size=args.size)
    if impl == "batched":
        model.pool_every_level = model.fixpoint_nms = True
    model.train()
    images, targets = batch(args.size, count, seed=1)
    count_training_step(model, images, targets)  # warm-up: first calls initialise lazily
    ops = count_training_step(model, images, targets)
    syncs = sync_ops(ops)
    return {"aten_ops": sum(ops.values()), "sync_ops": sum(syncs.values()), "syncs": syncs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fasterrcnn_resnet50_fpn")
    parser.add_argument("--size", type=int, default=320, help="image side, px")
    parser.add_argument("--batches", type=int, nargs=2, default=[2, 8], help="two batch sizes")
    parser.add_argument("--out", type=Path, default=Path("results/count_ops.json"))
    args = parser.parse_args(argv)
    small, large = args.batches
    results: dict[str, Any] = {
        "model": args.model,
        "size": args.size,
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
    for impl in ("batched", "torchvision"):
        at = {count: measure(args, impl, count) for count in (small, large)}
        per_image = (at[large]["aten_ops"] - at[small]["aten_ops"]) / (large - small)
        results[impl] = {f"batch_{n}": figures for n, figures in at.items()}
        results[impl]["aten_ops_per_extra_image"] = round(per_image, 1)
        print(
            f"{impl:12s} batch {small}: {at[small]['aten_ops']:6d} ops, "
            f"{at[small]['sync_ops']:3d} sync | batch {large}: {at[large]['aten_ops']:6d} ops, "
            f"{at[large]['sync_ops']:3d} sync {at[large]['syncs']} | {per_image:.0f} ops per extra image"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
