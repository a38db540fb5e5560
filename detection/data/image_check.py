"""Fail before the work: every image a COCO split names is a regular file of its declared size.

Only headers are read (a few KB per file), from a thread pool, so a large split is checked in
seconds to minutes instead of failing hours into training on one bad file.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numpy as np

from detection.core.coco_format import size_mismatch
from detection.core.errors import ImageReadError, InvalidInputError
from detection.core.images import image_size
from detection.data.coco import CocoDetection

CHUNK = 256  # images per task: a future per image costs more than reading its header
PROGRESS_FROM = 2000  # splits this large print a progress line every PROGRESS_SECONDS
PROGRESS_SECONDS = 5.0


def check_images(
    dataset: CocoDetection,
    *,
    max_pixels: int | None = None,
    threads: int | None = None,
    stop: Callable[[], bool] | None = None,
) -> bool:
    """Read the header of every image of `dataset`; raise for the first bad one (in json order).

    The error names the json, the image record and the field, and how many other images fail.
    Returns False without a verdict when `stop()` turned true (a SIGTERM), True when all passed.
    """
    total = len(dataset)
    workers = threads or min(32, (os.cpu_count() or 1) + 4)  # I/O bound: more than the cores
    ids, sizes = dataset.image_ids, dataset.image_sizes  # both copy: fetch once
    failures: list[tuple[int, InvalidInputError]] = []
    done, last_print, started = 0, time.monotonic(), time.monotonic()
    label = dataset.annotation_file.name
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-check") as pool:
        pending = {
            pool.submit(
                _check_chunk,
                dataset,
                ids,
                sizes,
                range(start, min(start + CHUNK, total)),
                max_pixels,
            )
            for start in range(0, total, CHUNK)
        }
        while pending:
            finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
            for future in finished:
                checked, bad = future.result()
                done += checked
                failures += bad
            if stop is not None and stop():
                for future in pending:
                    future.cancel()
                return False
            if total >= PROGRESS_FROM and time.monotonic() - last_print >= PROGRESS_SECONDS:
                last_print = time.monotonic()
                print(f"checking the images of {label}: {done}/{total}", file=sys.stderr)
    if total >= PROGRESS_FROM:
        elapsed = time.monotonic() - started
        print(f"checked {total} images of {label} in {elapsed:.1f} s", file=sys.stderr)
    if failures:
        _, error = min(failures, key=lambda failure: failure[0])
        if len(failures) > 1:
            more = f"{error.problem} (and {len(failures) - 1} more images fail this check)"
            error = type(error)(error.file, more, record=error.record, field=error.field)
        raise error
    return True


def _check_chunk(
    dataset: CocoDetection,
    ids: list[int],
    sizes: np.ndarray,
    indices: range,
    max_pixels: int | None,
) -> tuple[int, list[tuple[int, InvalidInputError]]]:
    failures = []
    for index in indices:
        try:
            _check_one(dataset, ids[index], sizes[index], index, max_pixels)
        except InvalidInputError as error:
            failures.append((index, error))
    return len(indices), failures


def _check_one(
    dataset: CocoDetection, image_id: int, size: np.ndarray, index: int, max_pixels: int | None
) -> None:
    json_file, path = dataset.annotation_file, dataset.image_path(index)
    record = f"image id {image_id}"
    try:
        width, height = image_size(path, max_pixels)
    except ImageReadError as error:
        raise ImageReadError(
            json_file, f"{path}: {error.problem}", record=record, field="file_name"
        ) from None
    problem = size_mismatch((int(size[1]), int(size[0])), (width, height), path)
    if problem is not None:
        raise InvalidInputError(json_file, problem, record=record, field="width/height")
