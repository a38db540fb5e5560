"""`detection evaluate`: score a COCO results file against ground truth; table, JSON and plots."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console

from detection.commands.common import load_thresholds_file
from detection.core.coco_format import read_json
from detection.core.errors import DetectionError, InvalidInputError
from detection.core.thresholds import DECISION_DEFAULT, Thresholds, add_threshold_argument
from detection.evaluation.coco import BACKENDS
from detection.evaluation.evaluator import evaluate_detections
from detection.evaluation.plots import save_plots
from detection.evaluation.report import print_report, write_metrics_json


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `detection evaluate`."""
    parser = argparse.ArgumentParser(
        prog="detection evaluate",
        description="COCO metrics, operating point and image-level pass/fail of a results file.",
    )
    parser.add_argument("--gt", required=True, type=Path, help="COCO ground-truth json")
    parser.add_argument(
        "--predictions", required=True, type=Path, help="COCO results json (list of detections)"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for metrics.json and plots")
    parser.add_argument("--backend", choices=BACKENDS, default="faster", help="COCO evaluator")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU of the operating point")
    add_threshold_argument(
        parser,
        f"default {DECISION_DEFAULT}; --score-threshold is an older name",
        "--score-threshold",
    )
    parser.add_argument(
        "--thresholds",
        type=Path,
        help="json {class_name: threshold} (or a metrics.json: its calibrated_thresholds), or "
        "a model file (.ckpt, .onnx, .pt): its thresholds; classes not listed use --threshold",
    )
    parser.add_argument(
        "--target-recall",
        type=float,
        help="also report per class the threshold reaching this recall",
    )
    parser.add_argument(
        "--area-ranges",
        help='json (inline or a file) of three ranges, e.g. \'{"small": [0, 256], '
        '"medium": [256, 1024], "large": [1024, 1e10]}\'',
    )
    parser.add_argument(
        "--max-dets", type=int, nargs=3, default=[1, 10, 100], help="COCO maxDets (AR1/AR10/AR100)"
    )
    return parser


def _load_area_ranges(text: str) -> dict:
    if Path(text).is_file():
        data = read_json(text)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InvalidInputError(
                "--area-ranges", f"neither a file nor valid JSON ({error})"
            ) from None
    if not isinstance(data, dict):
        raise InvalidInputError("--area-ranges", "must be a JSON object {name: [min, max]}")
    return data


def main(argv: list[str]) -> int:
    """Run `detection evaluate`; returns 0, or 2 on bad input (one line on stderr)."""
    args = build_parser().parse_args(argv)
    try:
        thresholds = Thresholds.parse(args.threshold) or Thresholds()
        if args.thresholds is not None:
            thresholds = thresholds.updated(load_thresholds_file(args.thresholds))
        area_ranges = None if args.area_ranges is None else _load_area_ranges(args.area_ranges)
        evaluation = evaluate_detections(
            args.gt,
            args.predictions,
            backend=args.backend,
            area_ranges=area_ranges,
            max_dets=args.max_dets,
            iou_threshold=args.iou,
            score_threshold=thresholds,
            target_recall=args.target_recall,
        )
        metrics_path = write_metrics_json(evaluation.report, args.out / "metrics.json")
        plots = save_plots(evaluation.curves, evaluation.report, args.out)
    except (DetectionError, ValueError, OSError) as error:
        message = str(error).replace("\n", " ")
        print(f"detection evaluate: error: {message}", file=sys.stderr)
        return 2
    console = Console(width=None if sys.stdout.isatty() else 160)
    print_report(evaluation.report, console)
    console.print(f"wrote {metrics_path}")
    for path in plots:
        console.print(f"wrote {path}")
    return 0
