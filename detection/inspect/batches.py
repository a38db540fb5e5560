"""Batches of an inspection job: decoded in DataLoader workers, and on CPU inspected there too.

A detection model runs many small ops, each a synchronisation point for intra-op threads; one
single-threaded model per process has none, and does not collapse when cores are shared (on a
busy 2-core machine one model with 2 OpenMP threads ran 5-15x slower than with 1). So on CPU
every DataLoader worker decodes a batch *and* runs its own copy of the model on it (PyTorch runs
workers with one thread), and the main process only writes. A CUDA model stays in the main
process, fed by workers that only decode.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from detection.core.errors import DetectionError, OutputError
from detection.core.images import read_image, to_tensor
from detection.inference.draw import draw_prediction, save_image
from detection.inference.predictor import Detector, Prediction
from detection.inspect.lifetime import worker_init


@dataclass
class InspectedBatch:
    """The outcome of one batch: predictions of the images the model took, errors of the rest."""

    predictions: list[Prediction]
    bad: list[dict[str, Any]]  # {"path", "error", "type"} per image that could not be inspected
    # (path, problem) of an output that could not be written (a full disk): the job stops. Carried
    # as data, since a DataLoader worker's exception reaches the job as a multi-line traceback.
    unwritable: tuple[str, str] | None = None

    def __len__(self) -> int:
        return len(self.predictions) + len(self.bad)


def decode(path: str, max_pixels: int | None) -> dict[str, Any]:
    """One image as a CHW uint8 tensor item; a bad file becomes an error item, not an exception."""
    if not is_utf8(path):
        # The file would be read, but its name cannot be written to the results as text.
        problem = f"the file name is not valid UTF-8 ({os.fsencode(path)!r}); rename the file"
        return {"path": path, "image": None, "error": problem, "type": "InvalidInputError"}
    try:
        array = read_image(path, max_pixels)
    except Exception as err:  # noqa: BLE001 - any failure to decode one file must not stop the job
        problem = getattr(err, "problem", None) or f"{type(err).__name__}: {err}"
        return {"path": path, "image": None, "error": problem, "type": type(err).__name__}
    # CHW uint8: a quarter of the float size through worker queues and to the GPU.
    return {"path": path, "image": to_tensor(array, torch.uint8), "error": None}


def is_utf8(path: str) -> bool:
    """False for a file name that is not valid UTF-8 (Python holds it with surrogate escapes)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def failed_image_name(path: str) -> str:
    """A unique, readable file name for the drawn copy of an image."""
    digest = hashlib.sha1(os.fsencode(path)).hexdigest()[:10]
    return f"{Path(path).stem}-{digest}.jpg"


class BatchInspector:
    """Runs the model over a batch of decoded items, and draws the failed images if asked."""

    def __init__(self, detector: Detector, batch_size: int, drawn_dir: Path | None) -> None:
        self.detector = detector
        self.batch_size = batch_size
        self.drawn_dir = drawn_dir

    def __call__(self, items: list[dict[str, Any]]) -> InspectedBatch:
        """Predict the decodable items; an image the model cannot take becomes an error item."""
        good = [item for item in items if item["error"] is None]
        bad = [{k: v for k, v in item.items() if k != "image"} for item in items if item["error"]]
        try:
            predictions = self._predict(good, self.batch_size)
        except torch.cuda.OutOfMemoryError:
            raise  # the device's fault, not the images': stop rather than mark them all bad
        except Exception:  # noqa: BLE001 - find the image the model cannot take, keep the others
            predictions, kept = [], []
            for item in good:
                try:
                    predictions += self._predict([item], 1)
                    kept.append(item)
                except Exception as err:  # noqa: BLE001
                    message = f"model failed on this image ({type(err).__name__}: {err})"
                    bad.append({"path": item["path"], "error": message, "type": "InferenceError"})
            good = kept
        try:
            self._draw(good, predictions)
        except OutputError as err:
            return InspectedBatch([], [], unwritable=(err.path, err.problem))
        return InspectedBatch(predictions, bad)

    def _draw(self, items: list[dict[str, Any]], predictions: list[Prediction]) -> None:
        """Save the failed images with their defects drawn, if asked to."""
        if self.drawn_dir is None:
            return
        # Drawn before the line is written: a restart redraws an image, never misses one.
        for item, prediction in zip(items, predictions, strict=True):
            if not prediction.passed:
                drawn = draw_prediction(item["image"].permute(1, 2, 0).numpy(), prediction)
                save_image(self.drawn_dir / failed_image_name(item["path"]), drawn)

    def _predict(self, items: list[dict[str, Any]], batch_size: int) -> list[Prediction]:
        images = [item["image"] for item in items]
        return self.detector.predict_tensors(images, [item["path"] for item in items], batch_size)


class BatchFiles(Dataset):
    """Item i is batch i of the paths, decoded, and inspected when given an inspector: run by a
    DataLoader worker, that is where the model runs."""

    def __init__(
        self,
        paths: Sequence[str],
        batch_size: int,
        max_pixels: int | None,
        inspector: BatchInspector | None,
    ) -> None:
        self.paths = list(paths)
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.inspector = inspector

    def __len__(self) -> int:
        return math.ceil(len(self.paths) / self.batch_size)

    def __getitem__(self, index: int) -> InspectedBatch | list[dict[str, Any]]:
        start = index * self.batch_size
        items = [decode(p, self.max_pixels) for p in self.paths[start : start + self.batch_size]]
        return items if self.inspector is None else self.inspector(items)


def _as_is(batch: Any) -> Any:
    return batch  # BatchFiles items are whole batches already


def inspected_batches(
    paths: Sequence[str],
    inspector: BatchInspector,
    workers: int,
    max_pixels: int | None,
) -> Iterator[InspectedBatch]:
    """The inspected batches of `paths` in order: on CPU the workers run the model, on CUDA this
    process does, on batches the workers decoded.

    Raises:
        OutputError: a drawn image could not be written (its batch is not returned).
    """
    device = inspector.detector.device
    # A runtime whose threads do not survive fork (OpenVINO) stays here, as a CUDA model does.
    in_workers = device.type == "cpu" and inspector.detector.runs_in_forked_workers
    loader = DataLoader(
        BatchFiles(paths, inspector.batch_size, max_pixels, inspector if in_workers else None),
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=device.type == "cuda",
        # Two batches in flight per worker keep the model fed without hoarding memory.
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=functools.partial(worker_init, os.getpid()) if workers > 0 else None,
    )
    for batch in loader:
        inspected = batch if in_workers else inspector(batch)
        if inspected.unwritable is not None:
            raise OutputError(*inspected.unwritable)
        yield inspected


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
