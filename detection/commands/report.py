"""`detection report`: write the offline HTML inspection report of an inspect folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.commands.common import EXIT_OK, EXIT_USAGE, CommandParser
from detection.core.errors import DetectionError
from detection.report.writer import DEFAULT_BAND, DEFAULT_MAX_IMAGES, write_report

EPILOG = """\
exit status:
  0    the report was written to OUTPUT_FOLDER/report/index.html
  2    bad arguments, not an inspect folder, or bad ground truth (one line on stderr)

The page opens from disk in any current browser, offline: copy or zip the report/ folder to
share it. With --gt it also shows escapes, false rejects and per-class P/R/F1.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `detection report`."""
    parser = CommandParser(
        prog="detection report",
        description="Write OUTPUT_FOLDER/report/index.html: counts, the failed and borderline "
        "parts, filters and what-if thresholds of an inspection job.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("output", type=Path, metavar="OUTPUT_FOLDER", help="an inspect --output")
    parser.add_argument("--gt", type=Path, help="COCO ground-truth json of the inspected images")
    parser.add_argument(
        "--images", type=Path, help="folder the ground truth's file_name values are relative to "
        "(default: the json's folder)",
    )  # fmt: skip
    parser.add_argument("--iou", type=float, default=0.5, help="IoU of a match (default 0.5)")
    parser.add_argument(
        "--band", type=float, default=DEFAULT_BAND,
        help="borderline: a detection this much or less under its class threshold "
        "(default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--max-images", type=int, default=DEFAULT_MAX_IMAGES,
        help="images with a thumbnail and preview, highest score first (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    return parser


def main(argv: list[str]) -> int:
    """Run `detection report`; returns 0, or 2 with one line on stderr."""
    args = build_parser().parse_args(argv)
    if args.images is not None and args.gt is None:
        print("detection report: error: --images needs --gt", file=sys.stderr)
        return EXIT_USAGE
    try:
        page = write_report(
            args.output,
            gt=args.gt,
            images=args.images,
            iou=args.iou,
            band=args.band,
            max_images=args.max_images,
            progress=args.progress,
        )
    except (DetectionError, ValueError, OSError) as err:
        message = str(err).replace("\n", " ")
        print(f"detection report: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {page}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
