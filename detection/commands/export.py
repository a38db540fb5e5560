"""`detection export`: a checkpoint as one TorchScript file with its class names and thresholds."""

from __future__ import annotations

import argparse
import sys

from detection.commands.inspect import EXIT_USAGE, CommandParser, add_threshold_arguments
from detection.errors import DetectionError
from detection.inference.export import export_torchscript
from detection.thresholds import Thresholds


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `detection export`."""
    parser = CommandParser(
        prog="detection export",
        description="Export a checkpoint to TorchScript (runs with torch alone; class names and "
        "thresholds are stored in the file as extra file 'detection.json').",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint (.ckpt) of a trained model")
    parser.add_argument("--out", required=True, help="TorchScript file to write, e.g. model.pt")
    add_threshold_arguments(parser)
    return parser


def main(argv: list[str]) -> int:
    """Run `detection export`; returns 0, or 2 with one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        path = export_torchscript(
            args.checkpoint,
            args.out,
            thresholds=Thresholds.parse(args.threshold),
            report_threshold=args.report_threshold,
        )
    except (DetectionError, ValueError, OSError, RuntimeError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"detection export: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
