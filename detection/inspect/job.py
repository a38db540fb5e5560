"""Batch inspection jobs: folders of images -> sharded JSON Lines, resumable and exactly-once.

Layout of an output folder:

    OUT/job.json                   settings that decide results; a restart must match them
    OUT/results/part-<rank>-<n>.jsonl  one line per inspected image
    OUT/errors.jsonl, errors-<rank>.jsonl  one line per input that could not be inspected
    OUT/failed/*.jpg               (--save-images) failed images with their defects drawn
    OUT/summary.json, coco_results.json, results.csv  rebuilt from the lines at the end

The parts: inspect_config.py (the settings), batches.py (decoding and the model, in DataLoader
workers on CPU), rank.py (one rank's exactly-once loop), launcher.py (several ranks as
processes) and job_outputs.py (summary, COCO results, CSV).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from detection.core.errors import DetectionError
from detection.core.run_folder import claim_folder
from detection.inference.onnx_model import read_meta
from detection.inference.predictor import Detector
from detection.inspect.batches import check_model_runs, failed_image_name
from detection.inspect.config import InspectConfig
from detection.inspect.launcher import run_spawned
from detection.inspect.outputs import JOB_FILE, summarize_job
from detection.inspect.rank import FAILED_DIR, run_rank
from detection.inspect.sources import discover_inputs

__all__ = ["FAILED_DIR", "InspectConfig", "failed_image_name", "run_inspect"]


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
    claim_folder(
        Path(output) / JOB_FILE, settings, what="a job", advice="use a new --output folder"
    )


def run_inspect(config: InspectConfig, detector: Detector | None = None) -> dict[str, Any]:
    """Run (or resume) an inspection job and return its summary, also written to summary.json.

    With `devices` > 1 this node's ranks run as spawned processes; otherwise in this process,
    with `detector` if given (it must match the config's checkpoint and settings).
    """
    config.check()
    inputs = discover_inputs(config.inputs, exclude=[config.output])
    if not inputs:
        raise DetectionError(f"no images found in {', '.join(map(str, config.inputs))}")
    start = time.perf_counter()
    if config.devices == 1:
        detector = detector or config.make_detector()
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
        runs = run_spawned(config, inputs)
    return summarize_job(config, inputs, runs, time.perf_counter() - start)
