"""Runs this node's ranks of an inspection job as spawned processes, one per device."""

from __future__ import annotations

import multiprocessing
import os
import queue
from dataclasses import asdict

import torch

from detection.core.errors import DetectionError
from detection.inference.predictor import resolve_device
from detection.inspect.batches import check_model_runs
from detection.inspect.config import InspectConfig, usable_cores
from detection.inspect.lifetime import die_with_parent
from detection.inspect.rank import RankStats, run_rank


def _rank_process(
    config: InspectConfig,
    local_rank: int,
    inputs: list[str],
    results: multiprocessing.Queue,
    parent_pid: int,
) -> None:
    """Entry point of one spawned rank: its own device, its own shard."""
    die_with_parent(parent_pid)  # a SIGKILLed launcher leaves no rank running
    rank = config.node_rank * config.devices + local_rank
    try:
        if resolve_device(config.device).type == "cuda":
            device = f"cuda:{local_rank}"
        else:
            # CPU ranks share the machine's cores instead of each starting one thread per core.
            device = "cpu"
            torch.set_num_threads(max(1, usable_cores() // config.devices))
        detector = config.make_detector(device)
        check_model_runs(detector, config.checkpoint)
        stats = run_rank(config, rank, inputs, detector)
        results.put(("ok", asdict(stats)))
    except BaseException as err:  # noqa: BLE001 - report any failure to the parent, then exit
        results.put(("error", f"rank {rank}: {type(err).__name__}: {err}"))
        raise SystemExit(1) from None


def run_spawned(config: InspectConfig, inputs: list[str]) -> list[RankStats]:
    """Run this node's `devices` ranks as separate processes and collect their stats."""
    if resolve_device(config.device).type == "cuda" and config.devices > torch.cuda.device_count():
        raise DetectionError(
            f"--devices {config.devices} but only {torch.cuda.device_count()} CUDA devices are visible"
        )
    context = multiprocessing.get_context("spawn")  # CUDA cannot be used in forked children
    results = context.Queue()
    processes = [
        context.Process(
            target=_rank_process, args=(config, r, inputs, results, os.getpid()), daemon=False
        )
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
