"""Images/s of the training data pipeline against decoding alone, on DeepPCB's 640x640 images.

Per worker: everything runs in this one process, as inside one DataLoader worker (one torch
thread, one OpenCV thread). The pipeline is CocoDataModule's training loader with the default
augmentations: decode + augment + to-tensor + grouped batching + collate. The baseline is
read_image alone (OpenCV decode, gray -> RGB) of the same images, timed right after each
batch so that both see the same load when the machine is shared.

The default brightness/contrast jitter runs on the device after the batch transfer, not in the
workers (detection.data.device_transforms); what it costs there is reported beside the ratio,
measured on this machine's CPU (on a GPU it is a few microseconds per image).

    python scripts/bench_data.py --out results/bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from detection.core.images import read_image, to_tensor  # noqa: E402
from detection.data.datamodule import CocoDataModule, collate  # noqa: E402
from detection.data.deeppcb import deeppcb_to_coco  # noqa: E402
from detection.data.device_transforms import DEFAULT_DEVICE_TRANSFORMS  # noqa: E402
from detection.data.transforms import DEFAULT_TRAIN_TRANSFORMS, apply_transforms  # noqa: E402

TARGET_RATIO = 0.8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default="/work/shared/datasets/deeppcb", help="DeepPCB folder")
    parser.add_argument("--split", default="trainval", choices=["trainval", "test"])
    parser.add_argument("--num-images", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30, help="images run before timing")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads")
    parser.add_argument("--out", default="results/bench_data.json")
    return parser.parse_args(argv)


def write_subset(root: Path, split: str, num_images: int, out: Path) -> Path:
    """COCO json of the first num_images images of a DeepPCB split, with their boxes."""
    coco = deeppcb_to_coco(root, split)
    images = coco["images"][:num_images]
    keep = {image["id"] for image in images}
    coco = {**coco, "images": images}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in keep]
    out.write_text(json.dumps(coco))
    return out


def time_decode(paths: list[Path]) -> float:
    """Seconds to decode every path to RGB uint8."""
    start = time.perf_counter()
    for path in paths:
        read_image(path)
    return time.perf_counter() - start


def time_paired(dm: CocoDataModule, clock: Callable[[], float]) -> tuple[float, float, int]:
    """One epoch of the training loader, each batch followed by decoding its images alone.

    Returns (loader seconds, decode-alone seconds, images). Pairing batch by batch puts both
    under the same load from whatever else runs on the machine.
    """
    dataset = dm.datasets["train"]
    index_of = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    loader_s = decode_s = 0.0
    count = 0
    batches = iter(dm.train_dataloader())
    while True:
        start = clock()
        try:
            _, targets = next(batches)
        except StopIteration:
            break
        middle = clock()
        for target in targets:
            read_image(dataset.image_path(index_of[target["image_id"]]))
        end = clock()
        loader_s += middle - start
        decode_s += end - middle
        count += len(targets)
    return loader_s, decode_s, count


def stage_breakdown(dm: CocoDataModule) -> dict[str, float]:
    """Milliseconds per image spent in each stage, measured one stage at a time."""
    dataset = dm.datasets["train"]
    totals = dict.fromkeys(("decode", "augment", "to_tensor", "collate"), 0.0)
    for index in range(len(dataset)):
        t0 = time.perf_counter()
        image = read_image(dataset.image_path(index), keep_gray=dataset.keeps_gray)
        t1 = time.perf_counter()
        start, end = dataset._starts[index], dataset._ends[index]
        image, _, _ = apply_transforms(
            dataset.transforms, image, dataset._boxes[start:end], dataset._labels[start:end]
        )
        t2 = time.perf_counter()
        tensor = to_tensor(image, dataset.image_dtype)
        t3 = time.perf_counter()
        collate([(tensor, {}), (tensor, {})])
        t4 = time.perf_counter()
        for key, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            totals[key] += seconds
    return {key: 1000 * value / len(dataset) for key, value in totals.items()}


def device_transforms_ms(dm: CocoDataModule, rounds: int = 3) -> float:
    """CPU milliseconds per image that the device transforms add to finishing a batch."""
    batches = list(dm.train_dataloader())
    best = {True: float("inf"), False: float("inf")}
    for _ in range(rounds):
        for augment in (False, True):
            start = time.thread_time()
            for batch in batches:
                dm.finish_batch(batch, augment=augment)
            best[augment] = min(best[augment], time.thread_time() - start)
    images = sum(len(batch[0]) for batch in batches)
    return 1000 * (best[True] - best[False]) / images


def in_process_loaders(
    annotations: Path, args: argparse.Namespace, **overrides: Any
) -> CocoDataModule:
    """A CocoDataModule set up for training that loads in this process, as one worker does."""
    dm = CocoDataModule(
        train_annotations=str(annotations),
        train_images=args.root,
        batch_size=args.batch_size,
        num_workers=0,
        pin_memory=False,
        **overrides,
    )
    dm.setup("fit")
    return dm


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the rates and write the JSON report."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        annotations = write_subset(
            Path(args.root), args.split, args.num_images, Path(tmp) / "a.json"
        )
        dm = in_process_loaders(annotations, args)
        # The same loader without augmentation: what indexing, batching and collate cost.
        bare = in_process_loaders(annotations, args, train_transforms=None)
    dataset = dm.datasets["train"]
    paths = [dataset.image_path(i) for i in range(len(dataset))]
    for path in paths:  # page cache: both sides then read from memory
        path.read_bytes()
    for index in range(min(args.warmup, len(dataset))):
        dataset[index]
    time_decode(paths[: args.warmup])

    # Wall time, and CPU time of this thread: everything runs on one thread, and CPU time
    # hardly moves when other processes compete for the cores.
    clocks = {"wall": time.perf_counter, "cpu": time.thread_time}
    totals = {(c, n): [0.0, 0.0, 0] for c in clocks for n in ("pipeline", "no_augment")}
    rounds: dict[str, list[float]] = {f"{c}_{n}": [] for c, n in totals}
    for _ in range(args.rounds):
        for clock_name, clock in clocks.items():
            for name, module in (("pipeline", dm), ("no_augment", bare)):
                loader_s, decode_s, count = time_paired(module, clock)
                for i, value in enumerate((loader_s, decode_s, count)):
                    totals[clock_name, name][i] += value
                rounds[f"{clock_name}_{name}"].append(round(decode_s / loader_s, 3))
    rates = {
        key: {
            "decode_images_per_s": round(count / decode_s, 1),
            "loader_images_per_s": round(count / loader_s, 1),
            "ratio": round(decode_s / loader_s, 3),
        }
        for key, (loader_s, decode_s, count) in totals.items()
    }
    stages = stage_breakdown(dm)
    device_ms = device_transforms_ms(dm)
    ratio = rates["cpu", "pipeline"]["ratio"]
    report = {
        "benchmark": "data pipeline per worker vs decode alone",
        "dataset": f"DeepPCB {args.split}, first {len(paths)} images (640x640, mostly 1-channel JPEG)",
        "boxes": int(len(dataset._boxes)),
        "batch_size": args.batch_size,
        "threads": args.threads,
        "rounds": args.rounds,
        "transforms": DEFAULT_TRAIN_TRANSFORMS,
        "device_transforms": DEFAULT_DEVICE_TRANSFORMS,
        "device_transforms_cpu_ms_per_image": round(device_ms, 3),
        "ratio": ratio,
        "ratio_clock": "cpu",
        "target_ratio": TARGET_RATIO,
        "meets_target": bool(ratio >= TARGET_RATIO),
        "cpu": {name: rates["cpu", name] for name in ("pipeline", "no_augment")},
        "wall": {name: rates["wall", name] for name in ("pipeline", "no_augment")},
        "ratio_by_round": rounds,
        "ms_per_image_by_stage": {k: round(v, 3) for k, v in stages.items()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "opencv": cv2.__version__,
            "numpy": np.__version__,
        },
        "processor": platform.processor() or platform.machine(),
    }
    for clock_name in clocks:
        for name in ("pipeline", "no_augment"):
            r = rates[clock_name, name]
            print(
                f"{clock_name:4s} {name:10s}: loader {r['loader_images_per_s']:7.1f} images/s, "
                f"decode alone {r['decode_images_per_s']:7.1f} images/s, ratio {r['ratio']:.3f}"
            )
    print(f"ratio (cpu, with augmentation): {ratio:.3f} (target >= {TARGET_RATIO})")
    print("ms per image : " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(f"device transforms, run on this CPU after the transfer: {device_ms:.2f} ms per image")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
