"""Benchmark `detection inspect` against a naive loop on the same model and images.

The naive loop is what people write first: `cv2.imread`, convert, `model([image])` one image at
a time under `torch.no_grad()`, on the same device, in float32. On CPU it runs twice, with the
default torch/OpenCV threads and with one thread each, and the headline ratio is against the
faster of the two (on a small shared machine the default threads can fight each other, which
would flatter the job). The job is called in-process
(`run_inspect`) with a Detector built from the same checkpoint, so model loading is excluded from
both timings; the job's timing includes discovery, decoding workers, writing and fsyncing JSON
Lines and the summary.

CPU (default, a light model):
    python scripts/bench_inspect.py --out results/bench_inspect.json
GPU (R50-FPN at 800 px, mixed precision, batched):
    python scripts/bench_inspect.py --device cuda --precision 16-mixed \
        --model fasterrcnn_resnet50_fpn --min-size 800 --max-size 1333 --size 1333x800 \
        --images 200 --out results/bench_inspect_gpu.json

ONNX Runtime against the eager model (CPU; same images, decoded once, same Detector settings):
    python scripts/bench_inspect.py --onnx --out results/bench_onnx.json

Every CPU runtime side by side (eager, ONNX Runtime, OpenVINO f32, bf16 where the CPU has bf16
units, INT8 calibrated on --split or on the benchmark's own images), with decisions compared
to the eager model's and mAP50 when --split names a COCO split with annotations:
    python scripts/bench_inspect.py --openvino --model fasterrcnn_resnet50_fpn \
        --min-size 800 --max-size 1333 --size 1066x800 --images 4 --repeats 1

Weights are random (seeded) unless --checkpoint is given: speed does not depend on training,
and untrained heads score every proposal near 0.5, so post-processing and output are the
worst case (100 detections per image).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from detection.core.coco_format import results
from detection.data.synthetic import DEFAULT_CLASSES, render_image
from detection.inference.cpu_features import REPORTED
from detection.inference.openvino_model import read_openvino
from detection.inference.predictor import Detector, resolve_device
from detection.inspect.config import usable_cores
from detection.inspect.job import InspectConfig, run_inspect
from detection.models.checkpoint import CheckpointMeta, load_model
from detection.models.faster_rcnn import build_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained checkpoint (default: random weights)")
    parser.add_argument(
        "--model",
        default="fasterrcnn_mobilenet_v3_large_320_fpn",
        help="model without --checkpoint",
    )
    parser.add_argument("--min-size", type=int, default=320, help="model min_size (no checkpoint)")
    parser.add_argument("--max-size", type=int, default=640, help="model max_size (no checkpoint)")
    parser.add_argument("--images", type=int, default=32, help="number of images")
    parser.add_argument("--size", default="640x480", help="image WIDTHxHEIGHT (JPEG files)")
    parser.add_argument("--batch-size", type=int, help="inspect's (default: its own choice)")
    parser.add_argument("--workers", type=int, help="inspect's (default: its own choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--precision", default="32", help="inspect precision: 32, 16-mixed, ...")
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds of each; median kept")
    parser.add_argument("--workdir", help="keep images and outputs here (default: a temp folder)")
    parser.add_argument("--out", default="results/bench_inspect.json", help="JSON report")
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="instead: the exported ONNX model in onnxruntime against the eager model, on CPU",
    )
    parser.add_argument(
        "--openvino",
        action="store_true",
        help="instead: eager, onnxruntime and OpenVINO f32/bf16/INT8 side by side, on CPU",
    )
    parser.add_argument("--split", help="--openvino: COCO json to calibrate and score on")
    parser.add_argument("--split-images", help="--openvino: the folder of --split's images")
    parser.add_argument("--calibration-images", type=int, default=8, help="--openvino: INT8")
    parser.add_argument(
        "--calibration-split",
        help="--openvino: COCO json to calibrate INT8 on (default: --split itself); naming the "
        "validation split keeps the scored split out of calibration",
    )
    return parser.parse_args(argv)


def make_images(folder: Path, count: int, width: int, height: int) -> list[str]:
    """Synthetic defect images as JPEG files (decoding them is part of the work)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        kinds = [str(k) for k in rng.choice(DEFAULT_CLASSES, size=int(rng.integers(0, 3)))]
        image, _ = render_image(
            rng, width, height, kinds, min_defect_size=16, max_defect_size=min(width, height) // 3
        )
        path = folder / f"img{i:05d}.jpg"
        cv2.imwrite(
            str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92]
        )
        paths.append(str(path))
    return paths


def make_checkpoint(args: argparse.Namespace, path: Path) -> Path:
    """A seeded random-weights checkpoint in DetectionModule's layout."""
    torch.manual_seed(0)
    model_args = {"min_size": args.min_size, "max_size": args.max_size}
    model = build_model(args.model, len(DEFAULT_CLASSES), **model_args)
    meta = CheckpointMeta(
        model_name=args.model,
        num_classes=len(DEFAULT_CLASSES),
        class_names=list(DEFAULT_CLASSES),
        category_ids=list(range(1, len(DEFAULT_CLASSES) + 1)),
        model_args=model_args,
    )
    state = {"model." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "detection": meta.to_dict()}, path)
    return path


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def threads(count: int | None) -> Iterator[None]:
    """Run a block with `count` torch and OpenCV threads (None: leave the defaults)."""
    if count is None:
        yield
        return
    saved = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(count)
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        cv2.setNumThreads(saved[1])


def naive_loop(model: torch.nn.Module, paths: list[str], device: torch.device) -> float:
    """Seconds for imread + model([image]) one image at a time; results copied to the host."""
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for path in paths:
            image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
            tensor = torch.from_numpy(image).permute(2, 0, 1).float().div(255).to(device)
            output = model([tensor])[0]
            _ = {k: v.cpu() for k, v in output.items()}
    _sync(device)
    return time.perf_counter() - start


def config_for(
    args: argparse.Namespace,
    checkpoint: Path | None = None,
    images: Path | None = None,
    out: Path | None = None,
    detector: Detector | None = None,
) -> InspectConfig:
    """The job's configuration: the benchmark's options, inspect's defaults otherwise."""
    return InspectConfig(
        checkpoint=str(checkpoint),
        inputs=[str(images)],
        output=str(out),
        batch_size=args.batch_size,
        workers=args.workers,
        device=str(detector.device) if detector else args.device,
        precision=detector.precision if detector else args.precision,
        progress=False,
    )


def inspect_job(
    detector: Detector, checkpoint: Path, images: Path, out: Path, args: argparse.Namespace
) -> tuple[float, dict]:
    """Seconds for one complete `detection inspect` job (model already loaded)."""
    config = config_for(args, checkpoint, images, out, detector)
    shutil.rmtree(out, ignore_errors=True)  # a leftover output would be resumed, not redone
    _sync(detector.device)
    start = time.perf_counter()
    summary = run_inspect(config, detector=detector)
    _sync(detector.device)
    return time.perf_counter() - start, summary


def onnx_against_eager(args: argparse.Namespace, checkpoint: Path, paths: list[str]) -> dict:
    """Images/s of Detector.predict with the eager model and with its ONNX export (CPU), with
    one thread and with one per usable core; decisions compared image by image."""
    from detection.inference.export import export_onnx

    onnx_path = export_onnx(checkpoint, checkpoint.with_suffix(".onnx"))
    images = [
        torch.from_numpy(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
        for p in paths
    ]
    report: dict = {"images": len(images), "threads": {}}
    for count in sorted({1, usable_cores()}):
        with threads(count):  # onnxruntime sessions take torch's thread count when made
            models = {
                "eager": Detector.from_checkpoint(checkpoint, device="cpu", precision="32"),
                "onnx": Detector.from_checkpoint(onnx_path, device="cpu"),
            }
            runs = {"eager batch 1": ("eager", 1), "eager batch 4": ("eager", 4)}
            runs["onnxruntime"] = ("onnx", 1)
            for name, batch in runs.values():
                models[name].predict_tensors(images[:2], batch_size=batch)  # warm-up
            times: dict[str, list[float]] = {run: [] for run in runs}
            decisions = {}
            for round_ in range(args.repeats):
                for run in runs if round_ % 2 == 0 else reversed(runs):
                    name, batch = runs[run]
                    start = time.perf_counter()
                    predictions = models[name].predict_tensors(images, batch_size=batch)
                    times[run].append(time.perf_counter() - start)
                    decisions[name] = [p.decision for p in predictions]
        rates = {run: len(images) / statistics.median(t) for run, t in times.items()}
        eager_best = max(rates["eager batch 1"], rates["eager batch 4"])
        report["threads"][count] = {
            "images_per_s": {run: round(rate, 3) for run, rate in rates.items()},
            "onnx_vs_best_eager": round(rates["onnxruntime"] / eager_best, 3),
            "same_decisions": decisions["eager"] == decisions["onnx"],
        }
        summary = ", ".join(f"{run} {rate:.2f}" for run, rate in rates.items())
        print(
            f"{count} thread(s): {summary} img/s; onnxruntime / best eager "
            f"{rates['onnxruntime'] / eager_best:.2f}x; same decisions "
            f"{decisions['eager'] == decisions['onnx']}"
        )
    return report


def _image_split(paths: list[str], folder: Path) -> Path:
    """A COCO json naming the benchmark's images without annotations (for calibration)."""
    images = []
    for i, p in enumerate(paths):
        height, width = cv2.imread(p).shape[:2]
        images.append({"id": i + 1, "file_name": Path(p).name, "width": width, "height": height})
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(DEFAULT_CLASSES)]
    path = folder / "bench_split.json"
    path.write_text(json.dumps({"images": images, "annotations": [], "categories": categories}))
    return path


def _rates(
    times: dict[str, list[float]],
    predictions: dict[str, list],
    ids: tuple[int, ...],
    split: object,
    has_boxes: bool,
) -> dict:
    """Per runtime: images/s, ratio to eager, decisions changed against eager, mAP50."""
    from detection.evaluation.evaluator import evaluate_detections

    count = len(predictions["eager"])
    eager_rate = count / statistics.median(times["eager"])
    report = {}
    for name in times:
        rate = count / statistics.median(times[name])
        changed = sum(
            a.decision != b.decision
            for a, b in zip(predictions["eager"], predictions[name], strict=True)
        )
        entry = {"images_per_s": round(rate, 3), "vs_eager": round(rate / eager_rate, 2)}
        entry["decisions_changed"] = changed
        line = f"  {name:20s} {rate:6.2f} img/s  {rate / eager_rate:5.2f}x eager  {changed} changed"
        if has_boxes:
            records = [
                r
                for image_id, p in zip(ids, predictions[name], strict=True)
                for r in results(image_id, p.boxes, p.scores, p.category_ids)
            ]
            entry["map50"] = round(
                evaluate_detections(split.annotations, records).report["AP50"], 4
            )
            line += f"  mAP50 {entry['map50']:.4f}"
        report[name] = entry
        print(line)
    return report


def openvino_against_eager(args: argparse.Namespace, checkpoint: Path, paths: list[str]) -> dict:
    """Images/s of every CPU runtime on the same decoded images, one run each per round; image
    decisions against the eager model's, and mAP50 on --split where it has annotations."""
    from detection.inference.cpu_features import cpu_features
    from detection.inference.export import export_onnx
    from detection.inference.openvino_export import ReducedPrecision, export_openvino
    from detection.inference.openvino_model import load_openvino
    from detection.inference.quantize import CocoSplit

    if args.split:
        split = CocoSplit(Path(args.split), Path(args.split_images or Path(args.split).parent))
        ids, paths = zip(*split.image_paths(), strict=True)
    else:
        split = CocoSplit(_image_split(paths, Path(paths[0]).parent), Path(paths[0]).parent)
        ids = tuple(range(1, len(paths) + 1))
    features = cpu_features()
    setup: dict[str, float] = {}
    start = time.perf_counter()
    onnx_path = export_onnx(checkpoint, checkpoint.with_suffix(".onnx"))
    ir_path = export_openvino(checkpoint, checkpoint.with_suffix(".xml"))
    setup["export_onnx_and_ir_s"] = time.perf_counter() - start
    start = time.perf_counter()
    calibration = split
    if args.calibration_split:
        calibration = CocoSplit(Path(args.calibration_split), split.images)
    reduced = ReducedPrecision(
        int8=True,
        calibration=calibration,
        calibration_images=args.calibration_images,
        warn_only=True,
    )
    int8_path = export_openvino(checkpoint, checkpoint.with_name("int8.xml"), reduced=reduced)
    setup["quantize_and_guard_s"] = time.perf_counter() - start
    images = [
        torch.from_numpy(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB)).permute(2, 0, 1)
        for p in paths
    ]
    meta = load_model(checkpoint)[1]
    runs = {
        "eager": lambda: Detector.from_checkpoint(checkpoint, device="cpu", precision="32"),
        "onnxruntime": lambda: Detector.from_checkpoint(onnx_path, device="cpu"),
        "openvino f32": lambda: Detector(load_openvino(ir_path, "f32")[0], meta, device="cpu"),
        "openvino int8": lambda: Detector(load_openvino(int8_path, "f32")[0], meta, device="cpu"),
    }
    if features.native_bf16:
        runs["openvino bf16"] = lambda: Detector(
            load_openvino(ir_path, "bf16")[0], meta, device="cpu"
        )
        runs["openvino int8+bf16"] = lambda: Detector(
            load_openvino(int8_path, "bf16")[0], meta, device="cpu"
        )
    has_boxes = bool(json.loads(split.annotations.read_text()).get("annotations"))
    report: dict = {"images": len(images), "threads": {}}
    for count in sorted({1, usable_cores()}):
        with threads(count):  # the runtimes take torch's thread count when they compile
            detectors = {name: make() for name, make in runs.items()}
            for detector in detectors.values():
                detector.predict_tensors(images[:1], batch_size=1)  # warm-up (and compilation)
            times: dict[str, list[float]] = {name: [] for name in runs}
            predictions = {}
            for round_ in range(args.repeats):
                for name in runs if round_ % 2 == 0 else reversed(runs):
                    start = time.perf_counter()
                    predictions[name] = detectors[name].predict_tensors(images, batch_size=1)
                    times[name].append(time.perf_counter() - start)
        print(f"{count} thread(s):")
        report["threads"][count] = _rates(times, predictions, ids, split, has_boxes)
    report["int8_guard"] = read_openvino(int8_path)[0].get("accuracy_guard")
    report["setup_seconds"] = {k: round(v, 1) for k, v in setup.items()}
    report["cpu_flags"] = sorted(features.flags & set(REPORTED))
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print both rates and their ratio, write the JSON report."""
    args = parse_args(argv)
    if args.onnx or args.openvino:
        return main_onnx(args)
    device = resolve_device(args.device)
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        images = work / "images"
        paths = sorted(str(p) for p in images.glob("*.jpg"))
        if len(paths) != args.images:
            paths = make_images(images, args.images, width, height)
        checkpoint = (
            Path(args.checkpoint)
            if args.checkpoint
            else make_checkpoint(args, work / "random.ckpt")
        )

        naive_model = load_model(checkpoint)[0].to(device)
        detector = Detector.from_checkpoint(checkpoint, device=device, precision=args.precision)
        # Warm-up: allocator, cuDNN/oneDNN kernels, DataLoader worker start-up paths.
        naive_loop(naive_model, paths[:2], device)
        warm = work / "warmup"
        (warm / "in").mkdir(parents=True, exist_ok=True)
        for p in paths[:8]:
            (warm / "in" / Path(p).name).write_bytes(Path(p).read_bytes())
        inspect_job(detector, checkpoint, warm / "in", warm / "out", args)

        # The naive loop with torch's and OpenCV's default threads, and (on CPU) with one thread
        # each: on a small or shared machine the default threads can fight each other, so the
        # headline ratio is taken against whichever naive variant is faster.
        variants = {"default threads": None}
        if device.type == "cpu":
            variants["1 thread"] = 1
        naive_times: dict[str, list[float]] = {name: [] for name in variants}
        job_times: list[float] = []
        summary: dict = {}
        for round_ in range(args.repeats):
            # Alternate the order so drifting load on a shared machine hurts both alike.
            order = ["naive", "job"] if round_ % 2 == 0 else ["job", "naive"]
            for kind in order:
                if kind == "job":
                    seconds, summary = inspect_job(
                        detector, checkpoint, images, work / f"out{round_}", args
                    )
                    job_times.append(seconds)
                    continue
                for name, count in variants.items():
                    with threads(count):
                        naive_times[name].append(naive_loop(naive_model, paths, device))
            rates = ", ".join(f"naive {n} {len(paths) / t[-1]:.2f}" for n, t in naive_times.items())
            print(
                f"round {round_ + 1}: {rates}, inspect {len(paths) / job_times[-1]:.2f} img/s",
                file=sys.stderr,
            )
        naive_rates = {n: len(paths) / statistics.median(t) for n, t in naive_times.items()}
        best = max(naive_rates, key=naive_rates.__getitem__)
        naive_rate = naive_rates[best]
        job_rate = len(paths) / statistics.median(job_times)
        report = {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch_threads_default": torch.get_num_threads(),
            "usable_cores": usable_cores(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "model": detector.meta.model_name,
            "model_args": detector.meta.model_args,
            "checkpoint": args.checkpoint or "random weights (seed 0)",
            "images": len(paths),
            "image_size": [width, height],
            "batch_size": config_for(args).batch_size_on(detector.device),
            "workers": config_for(args).workers_on(detector.device),
            "precision": detector.precision,
            "naive_images_per_s": {n: round(r, 3) for n, r in naive_rates.items()},
            "naive_best": best,
            "inspect_images_per_s": round(job_rate, 3),
            "speedup_vs_best_naive": round(job_rate / naive_rate, 3),
            "speedup_vs_each_naive": {n: round(job_rate / r, 3) for n, r in naive_rates.items()},
            "naive_seconds": {n: [round(t, 3) for t in ts] for n, ts in naive_times.items()},
            "inspect_seconds": [round(t, 3) for t in job_times],
            "detections_per_image": round(
                sum(c["detections"] for c in summary["classes"].values())
                / max(1, summary["images"]),
                1,
            ),
        }
    for name, rate in naive_rates.items():
        print(f"naive loop ({name}): {rate:.2f} images/s")
    print(
        f"detection inspect: {job_rate:.2f} images/s   ratio vs best naive ({best}): "
        f"{job_rate / naive_rate:.2f}x  ({report['model']}, {width}x{height}, {device}, "
        f"precision {report['precision']}, batch {report['batch_size']}, "
        f"workers {report['workers']})"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def main_onnx(args: argparse.Namespace) -> int:
    """The --onnx (or --openvino) benchmark: write its JSON report."""
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        paths = make_images(work / "images", args.images, width, height)
        checkpoint = (
            Path(args.checkpoint)
            if args.checkpoint
            else make_checkpoint(args, work / "random.ckpt")
        )
        compare = openvino_against_eager if args.openvino else onnx_against_eager
        report = compare(args, checkpoint, paths)
    report.update(
        model=args.model if not args.checkpoint else args.checkpoint,
        image_size=[width, height],
        cpu=platform.processor() or platform.machine(),
        usable_cores=usable_cores(),
        load_average_1min=round(os.getloadavg()[0], 2),
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
