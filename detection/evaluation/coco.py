"""COCO box metrics (AP/AR) through faster-coco-eval or pycocotools, never hand-matched."""

from __future__ import annotations

import contextlib
import gc
import io
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detection.evaluation.inputs import (
    GroundTruth,
    load_ground_truth,
    load_predictions,
    restrict_to_images,
)

BACKENDS = ("faster", "pycocotools")
METRIC_KEYS = (
    "AP",
    "AP50",
    "AP75",
    "APs",
    "APm",
    "APl",
    "AR1",
    "AR10",
    "AR100",
    "ARs",
    "ARm",
    "ARl",
)
COCO_AREA_RANGES = {"small": [0.0, 32.0**2], "medium": [32.0**2, 96.0**2], "large": [96.0**2, 1e10]}
ALL_AREA = [0.0, 1e10]


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the duration of the block.

    Evaluating allocates millions of small dicts and lists that live until the end; each
    allocation burst triggers full collections that scan all of them (a third of the run
    time at 500k detections) and free nothing, since none of it is garbage yet.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check_backend(backend: str) -> str:
    """Return ``backend`` if it is a known COCO evaluation backend, else raise ValueError."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown evaluation backend {backend!r}; choose one of {BACKENDS}")
    return backend


def check_area_ranges(area_ranges: Mapping[str, Sequence[float]] | None) -> dict[str, list[float]]:
    """Validate three named ``[min_area, max_area]`` ranges (COCO's small/medium/large by default)."""
    if area_ranges is None:
        return {k: list(v) for k, v in COCO_AREA_RANGES.items()}
    if not isinstance(area_ranges, Mapping) or len(area_ranges) != 3:
        raise ValueError("area_ranges must map exactly three names to [min_area, max_area]")
    out = {}
    for name, bounds in area_ranges.items():
        if (
            not isinstance(bounds, (list, tuple))
            or len(bounds) != 2
            or not all(
                isinstance(b, numbers.Real) and not isinstance(b, bool) and np.isfinite(b)
                for b in bounds
            )
            or not 0 <= bounds[0] < bounds[1]
        ):
            raise ValueError(
                f"area range {name!r} must be [min_area, max_area] with 0 <= min < max"
            )
        out[str(name)] = [float(bounds[0]), float(bounds[1])]
    return out


def check_max_dets(max_dets: Sequence[int]) -> list[int]:
    """Validate COCO's three maxDets values and return them sorted, as COCOeval uses them."""
    values = sorted(int(m) for m in max_dets)
    if len(values) != 3 or values[0] < 1 or len(set(values)) != 3:
        raise ValueError(f"max_dets must be three distinct positive integers, got {list(max_dets)}")
    return values


def _coco_api(backend: str, dataset: dict) -> Any:
    """A backend COCO object indexing ``dataset`` (no loadRes: it fails on an empty list)."""
    if backend == "faster":
        from faster_coco_eval import COCO
    else:
        from pycocotools.coco import COCO
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def coco_objects(backend: str, gt: GroundTruth, detections: list[dict]) -> tuple[Any, Any]:
    """COCO ground-truth and result objects for ``backend`` from normalised records."""
    dt_dataset = {
        "images": gt.dataset["images"],
        "categories": gt.dataset["categories"],
        "annotations": detections,
    }
    return _coco_api(backend, gt.dataset), _coco_api(backend, dt_dataset)


def run_cocoeval(
    backend: str,
    gt: GroundTruth,
    detections: list[dict],
    *,
    iou_thresholds: Sequence[float],
    area_ranges: Mapping[str, Sequence[float]],
    max_dets: Sequence[int],
    accumulate: bool = True,
) -> Any:
    """Run the backend's COCOeval evaluate (+ accumulate) and return the evaluator object."""
    check_backend(backend)
    coco_gt, coco_dt = coco_objects(backend, gt, detections)
    if backend == "faster":
        from faster_coco_eval import COCOeval_faster

        evaluator = COCOeval_faster(
            coco_gt,
            coco_dt,
            "bbox",
            print_function=lambda *args, **kwargs: None,
            # One C++ call for evaluate + accumulate: no per-image results kept in between.
            separate_eval=False,
        )
    else:
        from pycocotools.cocoeval import COCOeval

        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
    params = evaluator.params
    params.imgIds = list(gt.image_ids)
    params.catIds = list(gt.category_names)
    params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
    params.maxDets = list(max_dets)
    params.areaRng = [list(ALL_AREA)] + [list(v) for v in area_ranges.values()]
    params.areaRngLbl = ["all"] + list(area_ranges)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        if accumulate:
            evaluator.accumulate()
    return evaluator


def _mean_valid(values: np.ndarray) -> float:
    """COCOeval's summary statistic: the mean over entries > -1, or -1 if there are none."""
    valid = values[values > -1]
    return -1.0 if len(valid) == 0 else float(np.mean(valid))


def summarize(precision: np.ndarray, recall: np.ndarray, iou_thresholds: np.ndarray) -> dict:
    """The 12 COCO numbers from COCOeval's precision [TxRxKxAxM] and recall [TxKxAxM] arrays.

    Indexing mirrors ``COCOeval.summarize`` element for element so the float sums are
    identical. Unlike pycocotools (whose AP reads maxDets=100 even when 100 is not
    configured, giving -1), AP uses the largest maxDets, as AP50..ARl already do.
    """
    iou_thresholds = np.asarray(iou_thresholds)

    def iou_index(value: float) -> np.ndarray:
        return np.where(np.isclose(iou_thresholds, value, rtol=0.0, atol=1e-12))[0]

    def ap(iou: float | None = None, area: int = 0, dets: int = 2) -> float:
        s = precision if iou is None else precision[iou_index(iou)]
        return _mean_valid(s[:, :, :, [area], [dets]])

    def ar(area: int = 0, dets: int = 2) -> float:
        return _mean_valid(recall[:, :, [area], [dets]])

    values = [
        ap(),
        ap(iou=0.5),
        ap(iou=0.75),
        ap(area=1),
        ap(area=2),
        ap(area=3),
        ar(dets=0),
        ar(dets=1),
        ar(dets=2),
        ar(area=1),
        ar(area=2),
        ar(area=3),
    ]
    return dict(zip(METRIC_KEYS, values, strict=True))


def per_class_ap(
    precision: np.ndarray, iou_thresholds: np.ndarray, class_names: Sequence[str]
) -> dict[str, dict[str, float]]:
    """AP and AP50 per class (area 'all', largest maxDets); -1 for a class without gt."""
    iou50 = np.where(np.isclose(np.asarray(iou_thresholds), 0.5, rtol=0.0, atol=1e-12))[0]
    out = {}
    for k, name in enumerate(class_names):
        out[name] = {
            "AP": _mean_valid(precision[:, :, [k], [0], [-1]]),
            "AP50": _mean_valid(precision[iou50][:, :, [k], [0], [-1]]),
        }
    return out


def evaluate_coco(
    gt: dict | str | Path | GroundTruth,
    predictions: Sequence[dict] | str | Path,
    *,
    backend: str = "faster",
    max_dets: Sequence[int] = (1, 10, 100),
    area_ranges: Mapping[str, Sequence[float]] | None = None,
    iou_thresholds: Sequence[float] | None = None,
    image_ids: Iterable[int] | None = None,
) -> dict:
    """COCO box metrics of ``predictions`` against ``gt``, equal to pycocotools' COCOeval.

    Returns the 12 standard numbers (AP .. ARl, in COCOeval's order) and ``per_class``
    {name: {AP, AP50}}. ``area_ranges`` replaces COCO's small/medium/large (three ranges,
    in that order); ``image_ids`` limits the evaluation to those images.
    """
    check_backend(backend)
    ranges = check_area_ranges(area_ranges)
    dets = check_max_dets(max_dets)
    if iou_thresholds is None:
        # COCOeval's own construction; np.arange drifts off 0.75.
        thresholds = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
    else:
        thresholds = np.asarray(sorted(float(t) for t in iou_thresholds), dtype=np.float64)
        if len(thresholds) == 0 or not np.all((thresholds > 0) & (thresholds <= 1)):
            raise ValueError("iou_thresholds must be a non-empty list of values in (0, 1]")
    with paused_gc():
        ground_truth = load_ground_truth(gt)
        if image_ids is not None:
            ground_truth = restrict_to_images(ground_truth, image_ids)
        detections = load_predictions(predictions, ground_truth)
        return coco_metrics(
            backend,
            ground_truth,
            detections,
            thresholds=thresholds,
            area_ranges=ranges,
            max_dets=dets,
        )


def coco_metrics(
    backend: str,
    gt: GroundTruth,
    detections: list[dict],
    *,
    thresholds: np.ndarray,
    area_ranges: Mapping[str, Sequence[float]],
    max_dets: Sequence[int],
) -> dict:
    """COCO metrics of already validated records (see :func:`evaluate_coco`)."""
    if not gt.image_ids:
        result: dict[str, Any] = {key: -1.0 for key in METRIC_KEYS}
        result["per_class"] = {name: {"AP": -1.0, "AP50": -1.0} for name in gt.class_names}
        return result
    evaluator = run_cocoeval(
        backend,
        gt,
        detections,
        iou_thresholds=thresholds,
        area_ranges=area_ranges,
        max_dets=max_dets,
    )
    precision = np.asarray(evaluator.eval["precision"])
    recall = np.asarray(evaluator.eval["recall"])
    result = summarize(precision, recall, thresholds)
    result["per_class"] = per_class_ap(precision, thresholds, gt.class_names)
    return result
