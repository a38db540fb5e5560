"""Batch inspection jobs: folders of images -> sharded JSON Lines, resumable and exactly-once.

Layout of an output folder:

    OUT/job.json                   settings that decide results; a restart must match them
    OUT/results/part-<rank>-<n>.jsonl  one line per inspected image
    OUT/errors.jsonl, errors-<rank>.jsonl  one line per input that could not be inspected
    OUT/failed/*.jpg               (--save-images) failed images with their defects drawn
    OUT/summary.json, coco_results.json, results.csv  rebuilt from the lines at the end

The parts: config.py (the settings), sources.py (the inputs), batches.py (decoding and the
model, in DataLoader workers on CPU), rank.py (one rank's exactly-once loop), writer.py and
records.py (the shards and what a sound line is), launcher.py (several ranks as processes),
lifetime.py (helper processes die with the job) and outputs.py (summary, COCO results, CSV).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from detection.core.errors import DetectionError, InvalidInputError
from detection.core.files import check_regular_file
from detection.core.run_folder import claim_folder
from detection.inference.model_files import read_model_meta
from detection.inference.predictor import Detector
from detection.inference.tiling import check_tile
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
    """Record the job's settings in OUT/job.json, or check that a restart uses the same ones.

    Raises:
        InvalidInputError: the job.json there is not a regular file or not a JSON object.
        DetectionError: it records other settings.
    """
    record = Path(output) / JOB_FILE
    if os.path.lexists(record):
        check_job_file(record)
    claim_folder(record, settings, what="a job", advice="use a new --output folder")


def check_job_file(path: Path) -> None:
    """Refuse a job.json that a restart cannot compare settings with, naming it."""
    advice = "remove it, or use a new --output folder"
    check_regular_file(path)
    try:
        recorded = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        raise InvalidInputError(path, f"not a job settings file ({err}); {advice}") from None
    if not isinstance(recorded, dict):
        raise InvalidInputError(path, f"not a job settings file (not a JSON object); {advice}")


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
        check_tile(config.tile, detector.meta.model_args)
        check_model_runs(detector, config.checkpoint)
        claim_output(config.output, job_settings(config, detector.thresholds))
        runs = [run_rank(config, config.node_rank * config.devices, inputs, detector)]
    else:
        if detector is not None:
            raise ValueError("pass no detector with devices > 1: each rank loads its own")
        meta = read_model_meta(config.checkpoint)
        check_tile(config.tile, meta.model_args)
        # What each rank's Detector will use, without loading a model here.
        thresholds = dict(meta.decision_thresholds(config.thresholds).per_class)
        claim_output(config.output, job_settings(config, thresholds))
        runs = run_spawned(config, inputs)
    return summarize_job(config, inputs, runs, time.perf_counter() - start)
