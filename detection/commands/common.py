"""What every extra subcommand shares: exit codes, a one-line-error parser, threshold options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from detection.core.coco_format import read_json
from detection.core.errors import InvalidInputError
from detection.core.thresholds import REPORT_DEFAULT, add_threshold_argument, threshold_problem

EXIT_OK = 0
EXIT_USAGE = 2  # bad arguments, checkpoint or output folder: nothing was inspected
EXIT_INPUT_ERRORS = 3  # the job finished, but some inputs could not be read (see errors.jsonl)
EXIT_INTERRUPTED = 130


class CommandParser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def score(text: str) -> float:
    """argparse type of a score option: a number in 0..1 (argparse turns the error into one
    line naming the option)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if threshold_problem(value) is not None:
        raise argparse.ArgumentTypeError(f"expected a score in 0..1, got {text!r}")
    return value


def add_threshold_arguments(parser: argparse.ArgumentParser) -> None:
    """--threshold and --report-threshold, shared with `detection export`."""
    add_threshold_argument(parser, "default: the checkpoint's calibrated thresholds")
    parser.add_argument(
        "--report-threshold",
        type=score,
        default=REPORT_DEFAULT,
        help=f"lowest score written to the results (default {REPORT_DEFAULT})",
    )


def load_thresholds_file(path: Path) -> dict[str, float]:
    """Per-class thresholds from a json ({class: value}, or a metrics.json's
    `calibrated_thresholds`), or those a trained model file decides by: what `--thresholds FILE`
    of `detection evaluate` and `detection inspect` reads.

    Raises:
        InvalidInputError: the json is not such an object, or a value is not a number.
        WeightsError: a model file that cannot be read.
    """
    from detection.inference.model_files import MODEL_FORMATS, read_model_meta

    if path.suffix.lower() in MODEL_FORMATS:  # a .ckpt, .onnx or .pt: read by the model loader
        return dict(read_model_meta(path).decision_thresholds().per_class)
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("calibrated_thresholds"), dict):
        data = data["calibrated_thresholds"]
    if not isinstance(data, dict):
        raise InvalidInputError(path, "must be a JSON object {class_name: threshold}")
    for name, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidInputError(path, "must be a number", record=f"class '{name}'")
    return data
