"""One rank of an inspection job: its share of the images, inspected and written exactly once.

An image is done when its line is complete in a results file; a rank skips done images, so a
job killed at any moment and restarted has every image exactly once. A restart retries the images
with an error line: each rank first drops its own error lines for them (an image fixed since the
last run leaves errors.jsonl; one still bad gets its line again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from detection.inference.predictor import Detector
from detection.inspect.batches import BatchInspector, InspectedBatch, inspected_batches
from detection.inspect.config import InspectConfig
from detection.inspect.records import error_problem, result_problem
from detection.inspect.sources import shard_items
from detection.inspect.writer import (
    RESULTS_DIR,
    JsonlAppender,
    RankLock,
    ShardedJsonlWriter,
    drop_bad_lines,
    error_file,
    filter_records,
    iter_results,
)

FAILED_DIR = "failed"
log = logging.getLogger(__name__)


@dataclass
class RankStats:
    """What one rank did in this run."""

    rank: int
    todo: int = 0
    inspected: int = 0
    failed: int = 0
    errors: int = 0
    bad_lines: int = 0  # unsound lines found in this rank's files and dropped before the run
    seconds: float = 0.0

    def count(self, batch: InspectedBatch) -> None:
        """Add a written batch."""
        self.inspected += len(batch.predictions)
        self.failed += sum(not p.passed for p in batch.predictions)
        self.errors += len(batch.bad)


def done_images(output: str | Path) -> set[str]:
    """Images with a complete line in any rank's results file."""
    return {r["image"] for r in iter_results(output) if isinstance(r.get("image"), str)}


def drop_own_bad_lines(output: Path, rank: int, fsync: bool) -> int:
    """Drop the lines of this rank's result and error files that are not sound records, each
    reported in one line; their images have no sound line left, so they are inspected again."""
    dropped = [
        *(
            bad
            for shard in sorted((output / RESULTS_DIR).glob(f"part-{rank:05d}-*.jsonl"))
            for bad in drop_bad_lines(shard, result_problem, fsync)
        ),
        *drop_bad_lines(error_file(output, rank), error_problem, fsync),
    ]
    for bad in dropped:
        log.warning("%s; dropped, its image is inspected again", bad)
    return len(dropped)


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
        stats.bad_lines = drop_own_bad_lines(output, rank, config.fsync)
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
        with (
            closing(
                ShardedJsonlWriter(output / RESULTS_DIR, rank, config.shard_lines, config.fsync)
            ) as results,
            closing(JsonlAppender(error_file(output, rank), config.fsync)) as errors,
        ):
            if not todo:
                return stats
            inspector = BatchInspector(
                detector,
                config.batch_size_on(detector.device),
                output / FAILED_DIR if config.save_images else None,
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
                batches = inspected_batches(
                    todo, inspector, config.workers_on(detector.device), config.max_pixels
                )
                for batch in batches:
                    # Durable before counted: a line written is an image done.
                    bad = [
                        {"image": b["path"], "error": b["error"], "type": b["type"]}
                        for b in batch.bad
                    ]
                    errors.write(bad)
                    results.write([p.to_record() for p in batch.predictions])
                    stats.count(batch)
                    bar.update(len(batch))
                    bar.set_postfix(failed=stats.failed, errors=stats.errors, refresh=False)
            finally:
                stats.seconds = time.perf_counter() - start
                bar.close()
    return stats
