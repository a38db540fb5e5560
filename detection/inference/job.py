"""Batch inspection jobs: folders of images -> sharded JSON Lines, resumable and exactly-once.

Layout of an output folder:

    OUT/job.json                   settings that decide results; a restart must match them
    OUT/results/part-<rank>-<n>.jsonl  one line per inspected image
    OUT/errors.jsonl, errors-<rank>.jsonl  one line per input that could not be inspected
    OUT/failed/*.jpg               (--save-images) failed images with their defects drawn
    OUT/summary.json, coco_results.json, results.csv  rebuilt from the lines at the end

An image is done when its line is complete in a results file; a restart skips done images, so a
job killed at any moment and restarted has every image exactly once. A restart retries the images
with an error line: each rank first drops its own error lines for them (an image fixed since the
last run leaves errors.jsonl; one still bad gets its line again).
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import os
import queue
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from detection.coco_format import results
from detection.errors import DetectionError
from detection.images import MAX_PIXELS, read_image, to_tensor
from detection.inference.draw import draw_prediction, save_image
from detection.inference.onnx_model import read_meta
from detection.inference.predictor import Detector, resolve_device
from detection.inference.sources import discover_inputs, shard_items
from detection.inference.writer import (
    JsonlAppender,
    RankLock,
    ShardedJsonlWriter,
    error_file,
    error_files,
    filter_records,
    iter_records,
    result_files,
)
from detection.thresholds import REPORT_DEFAULT, ThresholdsLike

JOB_FILE = "job.json"
SUMMARY_FILE = "summary.json"
COCO_FILE = "coco_results.json"
CSV_FILE = "results.csv"
FAILED_DIR = "failed"


@dataclass
class InspectConfig:
    """Everything one `detection inspect` run needs."""

    checkpoint: str
    inputs: list[str]
    output: str
    batch_size: int | None = None  # images per model call; None: 8 on CUDA, 1 on CPU
    # DataLoader processes; None: one per core on CPU (where they also run the model), else 4.
    workers: int | None = None
    devices: int = 1  # processes (GPUs) on this node, one rank each
    num_nodes: int = 1
    node_rank: int = 0
    device: str = "auto"  # 'auto', 'cpu' or 'cuda'
    precision: str = "auto"
    thresholds: ThresholdsLike = None  # overrides of the checkpoint's thresholds
    report_threshold: float = REPORT_DEFAULT
    tile: int | None = None
    overlap: float = 0.2
    max_pixels: int | None = MAX_PIXELS
    save_images: bool = False
    coco_results: bool = False
    csv: bool = False
    shard_lines: int = 10000  # lines per results shard before a new one starts
    fsync: bool = True  # make every batch durable before the next; off only for benchmarks
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form, kept in job.json

    @property
    def world_size(self) -> int:
        """Ranks over all nodes."""
        return self.devices * self.num_nodes


@dataclass
class RankStats:
    """What one rank did in this run."""

    rank: int
    todo: int = 0
    inspected: int = 0
    failed: int = 0
    errors: int = 0
    seconds: float = 0.0


class ImageFiles(Dataset):
    """Decodes images in DataLoader workers; a bad file becomes an error item, not an exception."""

    def __init__(self, paths: Sequence[str], max_pixels: int | None) -> None:
        self.paths = list(paths)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            array = read_image(path, self.max_pixels)
        except Exception as err:  # noqa: BLE001 - any failure to decode one file must not stop the job
            problem = getattr(err, "problem", None) or f"{type(err).__name__}: {err}"
            return {"path": path, "image": None, "error": problem, "type": type(err).__name__}
        # CHW uint8: a quarter of the float size through worker queues and to the GPU.
        return {"path": path, "image": to_tensor(array, torch.uint8), "error": None}


def usable_cores() -> int:
    """CPU cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolved_batch_size(config: InspectConfig, device: torch.device) -> int:
    """config.batch_size, or the default for the device."""
    if config.batch_size is not None:
        return config.batch_size
    # Single-threaded CPU workers ran the light model ~15% faster one image at a time than in
    # batches of 4 (measured; see scripts/bench_inspect.py); GPUs need batches to be busy.
    return 8 if device.type == "cuda" else 1


def resolved_workers(config: InspectConfig, device: torch.device) -> int:
    """config.workers, or the default for the device."""
    if config.workers is not None:
        return config.workers
    cores = max(1, usable_cores() // config.devices)
    return cores if device.type == "cpu" else min(4, cores)


def _infer(
    items: list[dict[str, Any]], detector: Detector, batch_size: int, drawn_dir: Path | None
) -> dict[str, Any]:
    """Predict the decodable items of a batch; draw failed ones into `drawn_dir` if given."""
    good = [item for item in items if item["error"] is None]
    bad = [{k: v for k, v in item.items() if k != "image"} for item in items if item["error"]]
    try:
        predictions = detector.predict_tensors(
            [item["image"] for item in good], [item["path"] for item in good], batch_size
        )
    except torch.cuda.OutOfMemoryError:
        raise  # the device's fault, not the images': stop rather than mark them all bad
    except Exception:  # noqa: BLE001 - find the image the model cannot take, keep the others
        predictions, kept = [], []
        for item in good:
            try:
                predictions += detector.predict_tensors([item["image"]], [item["path"]], 1)
                kept.append(item)
            except Exception as err:  # noqa: BLE001
                message = f"model failed on this image ({type(err).__name__}: {err})"
                bad.append({"path": item["path"], "error": message, "type": "InferenceError"})
        good = kept
    if drawn_dir is not None:
        # Drawn before the line is written: a restart redraws an image, never misses one.
        for item, prediction in zip(good, predictions, strict=True):
            if not prediction.passed:
                drawn = draw_prediction(item["image"].permute(1, 2, 0).numpy(), prediction)
                save_image(drawn_dir / failed_image_name(item["path"]), drawn)
    return {"predictions": predictions, "bad": bad}


class Collate:
    """Batches of decoded items; on CPU it also runs the detector, inside the DataLoader worker.

    A detection model runs many small ops, each a synchronisation point for intra-op threads;
    one single-threaded model per process has none, and does not collapse when cores are shared
    (on a busy 2-core machine one model with 2 OpenMP threads ran 5-15x slower than with 1).
    So on CPU every worker decodes *and* predicts, and the main process only writes. A CUDA
    model stays in the main process, fed by workers that only decode.
    """

    def __init__(self, detector: Detector | None, batch_size: int, drawn_dir: Path | None) -> None:
        self.detector = detector
        self.batch_size = batch_size
        self.drawn_dir = drawn_dir

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        if self.detector is None:
            return {"items": items}
        return _infer(items, self.detector, self.batch_size, self.drawn_dir)


def job_settings(config: InspectConfig, detector_thresholds: dict[str, float]) -> dict[str, Any]:
    """The settings that decide what a result line says; a restart must not change them."""
    checkpoint = Path(config.checkpoint)
    stat = checkpoint.stat() if checkpoint.exists() else None
    return {
        "checkpoint": str(checkpoint.resolve()),
        "checkpoint_size": stat.st_size if stat else None,
        "thresholds": detector_thresholds,
        "report_threshold": config.report_threshold,
        "tile": config.tile,
        "overlap": config.overlap if config.tile else None,
        "max_pixels": config.max_pixels,
    }


def claim_output(output: str | Path, settings: dict[str, Any]) -> None:
    """Record the job's settings in OUT/job.json, or check that a restart uses the same ones."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    path = output / JOB_FILE
    if not path.exists():
        tmp = _temporary(path)
        tmp.write_text(json.dumps(settings, indent=2))
        try:
            os.link(tmp, path)  # atomic: of ranks or nodes starting together, one creates it
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    recorded = json.loads(path.read_text())
    changed = [k for k in settings if recorded.get(k) != settings[k]]
    if changed:
        key = changed[0]
        raise DetectionError(
            f"{output} holds a job with other settings ({key}: {recorded.get(key)!r} there, "
            f"{settings[key]!r} now); use a new --output folder"
        )


def done_images(output: str | Path) -> set[str]:
    """Images with a complete line in any rank's results file."""
    done: set[str] = set()
    for path in result_files(output):
        done.update(r["image"] for r in iter_records(path) if isinstance(r.get("image"), str))
    return done


def failed_image_name(path: str) -> str:
    """A unique, readable file name for the drawn copy of an image."""
    digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:10]
    return f"{Path(path).stem}-{digest}.jpg"


def run_rank(
    config: InspectConfig,
    rank: int,
    inputs: Sequence[str],
    detector: Detector,
) -> RankStats:
    """Inspect this rank's share of `inputs` that no complete line records yet."""
    output = Path(config.output)
    stats = RankStats(rank=rank)
    with RankLock(output, rank):
        mine = shard_items(inputs, rank, config.world_size)
        done = done_images(output)
        todo = [p for p in mine if p not in done]
        stats.todo = len(todo)
        retried = done.union(todo)
        # Before any retry: a kill after this leaves those images to do, never twice recorded.
        filter_records(
            error_file(output, rank), lambda r: r.get("image") not in retried, config.fsync
        )
        # Opening the writers also truncates a line torn by a kill in this rank's files.
        results = ShardedJsonlWriter(output / "results", rank, config.shard_lines, config.fsync)
        errors = JsonlAppender(error_file(output, rank), config.fsync)
        if not todo:
            results.close()
            errors.close()
            return stats
        batch_size = resolved_batch_size(config, detector.device)
        workers = resolved_workers(config, detector.device)
        drawn_dir = output / FAILED_DIR if config.save_images else None
        in_workers = detector.device.type == "cpu"
        loader = DataLoader(
            ImageFiles(todo, config.max_pixels),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=Collate(detector if in_workers else None, batch_size, drawn_dir),
            pin_memory=detector.device.type == "cuda",
            # Two batches in flight per worker keep the model fed without hoarding memory.
            prefetch_factor=2 if workers > 0 else None,
        )
        bar = tqdm(
            total=len(mine),
            initial=len(mine) - len(todo),
            unit="img",
            desc=f"inspect rank {rank}" if config.world_size > 1 else "inspect",
            position=rank % max(1, config.devices) if config.devices > 1 else None,
            disable=not config.progress,
            dynamic_ncols=True,
            smoothing=0.1,
        )
        start = time.perf_counter()
        try:
            for batch in loader:
                if "items" in batch:  # decoded only: predict here, on the GPU
                    batch = _infer(batch["items"], detector, batch_size, drawn_dir)
                _write_batch(batch, results, errors, stats)
                bar.update(len(batch["predictions"]) + len(batch["bad"]))
                bar.set_postfix(failed=stats.failed, errors=stats.errors, refresh=False)
        finally:
            stats.seconds = time.perf_counter() - start
            bar.close()
            results.close()
            errors.close()
    return stats


def _write_batch(
    batch: dict[str, Any], results: ShardedJsonlWriter, errors: JsonlAppender, stats: RankStats
) -> None:
    """Make a batch's lines durable, then count it."""
    predictions, bad = batch["predictions"], batch["bad"]
    errors.write([{"image": b["path"], "error": b["error"], "type": b["type"]} for b in bad])
    results.write([p.to_record() for p in predictions])
    stats.inspected += len(predictions)
    stats.failed += sum(not p.passed for p in predictions)
    stats.errors += len(bad)


def check_model_runs(detector: Detector, checkpoint: str | Path) -> None:
    """Fail at the start, not once per image, when the checkpoint's model cannot run at all."""
    try:
        detector.predict_tensors([torch.zeros(3, 64, 64, dtype=torch.uint8)], [None], 1)
    except torch.cuda.OutOfMemoryError:
        raise
    except Exception as err:  # noqa: BLE001 - whatever breaks on a blank image breaks on all
        first = (str(err).strip().splitlines() or [""])[0]
        raise DetectionError(
            f"{checkpoint}: the model cannot run ({type(err).__name__}: {first})"
        ) from None


def make_detector(config: InspectConfig, device: str | None = None) -> Detector:
    """The Detector a job's settings describe."""
    return Detector.from_checkpoint(
        config.checkpoint,
        device=device or config.device,
        precision=config.precision,
        thresholds=config.thresholds,
        report_threshold=config.report_threshold,
        tile=config.tile,
        overlap=config.overlap,
        max_pixels=config.max_pixels,
    )


def _rank_process(
    config: InspectConfig, local_rank: int, inputs: list[str], results: multiprocessing.Queue
) -> None:
    """Entry point of one spawned rank: its own device, its own shard."""
    rank = config.node_rank * config.devices + local_rank
    try:
        if resolve_device(config.device).type == "cuda":
            device = f"cuda:{local_rank}"
        else:
            # CPU ranks share the machine's cores instead of each starting one thread per core.
            device = "cpu"
            torch.set_num_threads(max(1, usable_cores() // config.devices))
        detector = make_detector(config, device)
        check_model_runs(detector, config.checkpoint)
        stats = run_rank(config, rank, inputs, detector)
        results.put(("ok", asdict(stats)))
    except BaseException as err:  # noqa: BLE001 - report any failure to the parent, then exit
        results.put(("error", f"rank {rank}: {type(err).__name__}: {err}"))
        raise SystemExit(1) from None


def _run_spawned(config: InspectConfig, inputs: list[str]) -> list[RankStats]:
    """Run this node's `devices` ranks as separate processes and collect their stats."""
    if resolve_device(config.device).type == "cuda" and config.devices > torch.cuda.device_count():
        raise DetectionError(
            f"--devices {config.devices} but only {torch.cuda.device_count()} CUDA devices are visible"
        )
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    results = context.Queue()
    processes = [
        context.Process(target=_rank_process, args=(config, r, inputs, results), daemon=False)
        for r in range(config.devices)
    ]
    for process in processes:
        process.start()
    messages = []
    try:
        while len(messages) < len(processes):
            try:
                messages.append(results.get(timeout=1.0))
            except queue.Empty:
                if all(not p.is_alive() for p in processes) and results.empty():
                    break  # a child died without reporting (killed, out of memory)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM to this process only): the ranks stop too, their written
        # lines are durable, and a restart resumes; left running, exit would wait for them.
        for process in processes:
            process.terminate()
        raise
    for process in processes:
        process.join()
    problems = [text for kind, text in messages if kind == "error"]
    crashed = [p.exitcode for p in processes if p.exitcode != 0]
    if problems or crashed or len(messages) < len(processes):
        detail = problems[0] if problems else f"a rank exited with status {crashed[:1]}"
        raise DetectionError(f"inspection failed: {detail}")
    return [RankStats(**data) for _, data in messages]


def _check_config(config: InspectConfig) -> None:
    if config.batch_size is not None and config.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {config.batch_size}")
    if config.workers is not None and config.workers < 0:
        raise ValueError(f"workers must be >= 0, got {config.workers}")
    if config.devices < 1 or config.num_nodes < 1:
        raise ValueError("devices and num_nodes must be >= 1")
    if not 0 <= config.node_rank < config.num_nodes:
        raise ValueError(f"node_rank {config.node_rank} is outside 0..{config.num_nodes - 1}")
    if config.max_pixels is not None and config.max_pixels < 1:
        raise ValueError(f"max_pixels must be >= 1, got {config.max_pixels}")


def run_inspect(config: InspectConfig, detector: Detector | None = None) -> dict[str, Any]:
    """Run (or resume) an inspection job and return its summary, also written to summary.json.

    With `devices` > 1 this node's ranks run as spawned processes; otherwise in this process,
    with `detector` if given (it must match the config's checkpoint and settings).
    """
    _check_config(config)
    inputs = discover_inputs(config.inputs, exclude=[config.output])
    if not inputs:
        raise DetectionError(f"no images found in {', '.join(map(str, config.inputs))}")
    start = time.perf_counter()
    if config.devices == 1:
        detector = detector or make_detector(config)
        check_model_runs(detector, config.checkpoint)
        claim_output(config.output, job_settings(config, detector.thresholds))
        runs = [run_rank(config, config.node_rank * config.devices, inputs, detector)]
    else:
        if detector is not None:
            raise ValueError("pass no detector with devices > 1: each rank loads its own")
        meta = read_meta(config.checkpoint)
        # What each rank's Detector will use, without loading a model here.
        thresholds = meta.thresholds.updated(config.thresholds).resolve(meta.class_names)
        claim_output(config.output, job_settings(config, thresholds))
        runs = _run_spawned(config, inputs)
    return summarize(config, inputs, runs, time.perf_counter() - start)


def _temporary(path: Path) -> Path:
    """A sibling temporary name no other process, on this machine or another, will use."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}")


def _write_atomic(path: Path, text: str) -> None:
    tmp = _temporary(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def iter_results(output: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete result record of a job, shard by shard."""
    for path in result_files(output):
        yield from iter_records(path)


def iter_errors(output: str | Path) -> Iterator[dict[str, Any]]:
    """Every complete error record of a job."""
    for path in error_files(output):
        yield from iter_records(path)


CSV_COLUMNS = (
    "image", "width", "height", "decision", "class_name", "category_id", "score",
    "x1", "y1", "x2", "y2", "fail",
)  # fmt: skip


def summarize(
    config: InspectConfig, inputs: Sequence[str], runs: Sequence[RankStats], seconds: float
) -> dict[str, Any]:
    """Count everything in the output folder (all ranks, all runs) and write summary.json.

    Also writes COCO results and CSV when the config asks; these are rebuilt from the complete
    lines, so they hold every image exactly once however often the job was restarted.
    """
    output = Path(config.output)
    settings = json.loads((output / JOB_FILE).read_text())
    classes = {
        name: {"detections": 0, "defects": 0, "failed_images": 0} for name in settings["thresholds"]
    }
    image_ids = {path: i + 1 for i, path in enumerate(inputs)}
    seen: set[str] = set()
    duplicates = passed = failed = 0
    coco_parts: list[str] = []
    csv_rows: list[list[Any]] = []
    for record in iter_results(output):
        image = record["image"]
        if image in seen:
            duplicates += 1
            continue
        seen.add(image)
        passed += record["decision"] == "pass"
        failed += record["decision"] == "fail"
        failing_classes = set()
        for det in record["detections"]:
            counts = classes.setdefault(
                det["class_name"], {"detections": 0, "defects": 0, "failed_images": 0}
            )
            counts["detections"] += 1
            if det["fail"]:
                counts["defects"] += 1
                failing_classes.add(det["class_name"])
        for name in failing_classes:
            classes[name]["failed_images"] += 1
        if config.coco_results:
            image_id = image_ids.setdefault(image, len(image_ids) + 1)
            coco_parts.extend(_coco_entry(image, image_id, det) for det in record["detections"])
        if config.csv:
            csv_rows.extend(_csv_rows(record))
    errors = 0
    for record in iter_errors(output):
        if record["image"] in seen:
            duplicates += 1
            continue
        seen.add(record["image"])
        errors += 1
    if config.coco_results:
        _write_atomic(output / COCO_FILE, "[\n" + ",\n".join(coco_parts) + "\n]\n")
    if config.csv:
        _write_csv(output / CSV_FILE, csv_rows)
    inspected_now = sum(r.inspected + r.errors for r in runs)
    # Ranks run side by side: the rate is the images of all of them over the slowest loop.
    loop_seconds = max((r.seconds for r in runs), default=0.0)
    missing = sum(1 for path in inputs if path not in seen)
    summary = {
        "output": str(output),
        "inputs": len(inputs),
        "images": passed + failed + errors,
        "passed": passed,
        "failed": failed,
        "errors": errors,
        "missing": missing,
        "duplicates": duplicates,
        "complete": missing == 0 and duplicates == 0,
        "classes": classes,
        "thresholds": settings["thresholds"],
        "report_threshold": settings["report_threshold"],
        "images_per_s": round(inspected_now / loop_seconds, 3) if loop_seconds > 0 else None,
        "this_run": {
            "images": inspected_now,
            "seconds": round(seconds, 3),  # wall time, model loading included
            "loop_seconds": round(loop_seconds, 3),
            "ranks": [asdict(r) for r in runs],
        },
    }
    _write_atomic(output / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    return summary


def _coco_entry(image: str, image_id: int, det: dict[str, Any]) -> str:
    (result,) = results(image_id, [det["bbox"]], [det["score"]], [det["category_id"]], decimals=2)
    return json.dumps({"image_id": image_id, "file_name": image, **result})


def _csv_rows(record: dict[str, Any]) -> list[list[Any]]:
    head = [record["image"], record["width"], record["height"], record["decision"]]
    if not record["detections"]:
        return [head + [""] * (len(CSV_COLUMNS) - len(head))]
    return [
        head + [d["class_name"], d["category_id"], d["score"], *d["bbox"], int(d["fail"])]
        for d in record["detections"]
    ]


def _write_csv(path: Path, rows: list[list[Any]]) -> None:
    tmp = _temporary(path)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    os.replace(tmp, path)
