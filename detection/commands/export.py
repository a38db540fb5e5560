"""`detection export`: a checkpoint as one ONNX or TorchScript file with its class names and thresholds."""

from __future__ import annotations

import argparse
import sys

from detection.commands.common import EXIT_USAGE, CommandParser, add_threshold_arguments
from detection.core.errors import DetectionError
from detection.core.thresholds import Thresholds
from detection.inference.export import export_model


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `detection export`."""
    parser = CommandParser(
        prog="detection export",
        description="Export a checkpoint to ONNX (--out *.onnx: runs with onnxruntime, class names "
        "and thresholds in the model's metadata) or TorchScript (any other suffix: runs with torch "
        "alone, class names and thresholds in the extra file 'detection.json').",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint (.ckpt) of a trained model")
    parser.add_argument(
        "--out", required=True, help="file to write: model.onnx (ONNX) or model.pt (TorchScript)"
    )
    add_threshold_arguments(parser)
    return parser


def main(argv: list[str]) -> int:
    """Run `detection export`; returns 0, or 2 with one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        path = export_model(
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
