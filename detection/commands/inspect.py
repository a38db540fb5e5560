"""`detection inspect`: run a checkpoint over folders of images as a resumable batch job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.commands.common import (
    EXIT_INPUT_ERRORS,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CommandParser,
    add_threshold_arguments,
    load_thresholds_file,
)
from detection.core.errors import DetectionError
from detection.core.interrupt import sigterm_as_interrupt
from detection.core.thresholds import Thresholds
from detection.inference.openvino_model import is_openvino, start_line
from detection.inference.predictor import PRECISIONS
from detection.inspect.job import InspectConfig, run_inspect

EPILOG = """\
exit status:
  0    every input was inspected
  2    bad arguments, checkpoint or output folder, or an output that cannot be written
       (a full disk): one line on stderr; what was written stays, a rerun resumes
  3    the job finished but some inputs could not be read: see OUT/errors.jsonl
  130  interrupted (Ctrl-C or SIGTERM): run the same command again to resume

outputs (in --output):
  results/part-<rank>-<n>.jsonl  one line per image: image, width, height, detections
                                 [{bbox xyxy, score, label, class_name, category_id, fail}],
                                 decision ("pass"/"fail")
  errors.jsonl                   one line per unreadable/refused input, with the reason
  summary.json                   counts, per-class counts, images/s
  coco_results.json, results.csv with --coco-results, --csv
  failed/                        with --save-images: failed images with their defects drawn

Detections with score >= --report-threshold are listed; those >= their class threshold have
"fail": true and fail the image. A job that is killed resumes where it stopped when the same
command is run again; each image ends up in the output exactly once. A result line that does
not parse or lacks a field is reported (file and line number), dropped, and its image inspected
again; summary.json says "complete": true only when every input has one sound line.

An image's result does not depend on the batch it ran in: only images of the same size are
batched together, so --batch-size, the device and the model format (.ckpt, .onnx) do not change
a decision. --tile below a quarter of the model's input size is refused (exit 2).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `detection inspect`; its options are InspectConfig's fields."""
    parser = CommandParser(
        prog="detection inspect",
        description="Inspect folders of images with a trained checkpoint: pass/fail per image.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint (.ckpt) of a trained model")
    parser.add_argument(
        "--input",
        dest="inputs",
        metavar="INPUT",
        required=True,
        nargs="+",
        help="folders (searched recursively), glob patterns ('imgs/**/*.png'), list files "
        "(.txt, one path a line, relative to the list) or image files",
    )
    parser.add_argument(
        "--output", required=True, help="output folder (created; resumed if it exists)"
    )
    parser.add_argument(
        "--batch-size", type=int, help="images per model call (default: 8 on GPU, 1 on CPU)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="DataLoader processes per device. On CPU each decodes and runs its own copy of the "
        "model with one thread (default: one per core); on GPU they decode (default 4)",
    )
    parser.add_argument(
        "--devices",
        type=int,
        help="processes on this node, one per GPU, each taking its own share of the inputs",
    )
    parser.add_argument("--num-nodes", type=int, help="machines running this job")
    parser.add_argument("--node-rank", type=int, help="this machine's index, 0..N-1")
    parser.add_argument("--device", help="%(default)s (default), cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="auto: 16-mixed on CUDA, 32 on CPU (mixed precision is used on CUDA only)",
    )
    add_threshold_arguments(parser)
    parser.add_argument(
        "--thresholds",
        dest="thresholds_file",
        metavar="FILE",
        help="json {class_name: threshold} (as the HTML report's button writes it, or a "
        "metrics.json: its calibrated_thresholds); --threshold values win",
    )
    parser.add_argument(
        "--tile", type=int, help="cut images into TILE x TILE windows (for images much larger "
        "than the training size); detections are merged with class-wise NMS. A tile below a "
        "quarter of the model's input size (min_size) is refused (exit 2): the model would "
        "enlarge every tile more than 4x and cut each image into very many tiles",
    )  # fmt: skip
    parser.add_argument(
        "--overlap", type=float, help="overlap of neighbouring tiles (default %(default)s)"
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        help="refuse larger images without decoding them (default %(default)s; 0: no limit)",
    )
    parser.add_argument(
        "--save-images", action="store_true", help="save failed images with defects drawn"
    )
    parser.add_argument("--coco-results", action="store_true", help="also write coco_results.json")
    parser.add_argument("--csv", action="store_true", help="also write results.csv")
    parser.add_argument(
        "--report",
        action="store_true",
        help="also write the HTML report, OUT/report/index.html (see `detection report`)",
    )
    parser.add_argument(
        "--shard-lines", type=int, help="lines per results file (default %(default)s)"
    )
    parser.add_argument(
        "--no-fsync",
        dest="fsync",
        action="store_false",
        help="do not fsync each batch (faster on network disks; a killed job still resumes "
        "exactly, but a machine crash may lose the last lines written)",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    parser.set_defaults(**InspectConfig.defaults())
    return parser


def main(argv: list[str]) -> int:
    """Run `detection inspect`; returns the exit status described in --help."""
    args = build_parser().parse_args(argv)
    with sigterm_as_interrupt() as terminated:
        return _run(args, terminated)


def _thresholds(args: argparse.Namespace) -> Thresholds | None:
    """--thresholds FILE, then --threshold values over it."""
    given = Thresholds.parse(args.threshold)
    if args.thresholds_file is None:
        return given
    return Thresholds(per_class=load_thresholds_file(Path(args.thresholds_file))).updated(given)


def _run(args: argparse.Namespace, terminated: list[bool]) -> int:
    try:
        # --threshold is every command's spelling of the one Thresholds option.
        config = InspectConfig.from_args(args, thresholds=_thresholds(args))
        if is_openvino(config.checkpoint):  # which precision and CPU units will run
            print(f"detection inspect: {start_line(config.checkpoint)}", file=sys.stderr)
        summary = run_inspect(config)
        if args.report:
            from detection.report import write_report

            print(f"wrote {write_report(config.output, progress=config.progress)}")
    except KeyboardInterrupt:
        print("detection inspect: interrupted; run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (DetectionError, ValueError, OSError, RuntimeError) as err:
        if terminated[0]:  # e.g. a DataLoader worker that died of the same SIGTERM first
            print("detection inspect: terminated; run the same command to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(err, RuntimeError) and not isinstance(err, DetectionError):
            raise
        print(f"detection inspect: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    rate = summary["images_per_s"]
    print(
        f"{summary['images']} images: {summary['passed']} passed, {summary['failed']} failed, "
        f"{summary['errors']} unreadable; this run: {summary['this_run']['inspected']} "
        f"inspected, {summary['this_run']['errors']} unreadable"
        + (f" at {rate:.1f} images/s" if rate else "")
        + f"; results in {args.output}"
    )
    if summary["bad_lines"]:
        print(
            f"note: {summary['bad_lines']} lines of other ranks' result files are not sound; "
            "the rank that wrote them drops them and inspects their images when it runs again",
            file=sys.stderr,
        )
    elif not summary["complete"]:
        print(
            f"note: {summary['missing']} inputs have no result yet (other nodes still running?); "
            "run the same command again when they are done",
            file=sys.stderr,
        )
    return EXIT_INPUT_ERRORS if summary["errors"] else EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
