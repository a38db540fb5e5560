"""What every extra subcommand shares: exit codes, a one-line-error parser, threshold options."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

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
