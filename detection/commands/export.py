"""`detection export`: a checkpoint as one ONNX or TorchScript file with its class names and thresholds."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from detection.commands.common import EXIT_USAGE, CommandParser, add_threshold_arguments
from detection.core.errors import DetectionError
from detection.core.thresholds import Thresholds
from detection.inference.export import export_model
from detection.inference.openvino_export import ReducedPrecision, bf16_unchecked_reason
from detection.inference.openvino_model import is_openvino
from detection.inference.quantize import (
    CALIBRATION_IMAGES,
    MAX_CHANGED_SHARE,
    MAX_MAP50_DROP,
    CocoSplit,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `detection export`."""
    parser = CommandParser(
        prog="detection export",
        description="Export a checkpoint to ONNX (--out *.onnx: runs with onnxruntime, class names "
        "and thresholds in the model's metadata), OpenVINO IR (--out *.xml: float32, or INT8 with "
        "--int8; metadata in the IR's rt_info) or TorchScript (any other suffix: runs with torch "
        "alone, class names and thresholds in the extra file 'detection.json').",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint (.ckpt) of a trained model")
    parser.add_argument(
        "--out",
        required=True,
        help="file to write: model.onnx (ONNX), model.xml (OpenVINO IR, with model.bin) or "
        "model.pt (TorchScript)",
    )
    add_threshold_arguments(parser)
    add_openvino_arguments(parser)
    return parser


def add_openvino_arguments(parser: argparse.ArgumentParser) -> None:
    """INT8 quantization and the bf16 check of `--out model.xml`, and their accuracy guard."""
    group = parser.add_argument_group(
        "OpenVINO (--out *.xml)",
        "reduced precisions are written only when they pass the accuracy guard: mAP50 and image "
        "decisions on the calibration split against the float model",
    )
    group.add_argument("--int8", action="store_true", help="quantize to INT8 with NNCF")
    group.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="check bf16 inference with the guard (it needs this CPU's bf16 units); when it "
        "passes, bf16 is the default on CPUs with bf16 units. Default: checked where this CPU "
        "has them and a split is known, else float32 with a line saying why",
    )
    group.add_argument(
        "--calibration",
        help="COCO json of the images to calibrate and check on (default: the checkpoint's "
        "validation split)",
    )
    group.add_argument(
        "--calibration-images",
        help="folder of --calibration's images (default: the json's folder)",
    )
    group.add_argument(
        "--calibration-count",
        type=int,
        default=CALIBRATION_IMAGES,
        help="images NNCF calibrates on (default %(default)s; the guard checks all)",
    )
    group.add_argument(
        "--max-map50-drop",
        type=float,
        default=MAX_MAP50_DROP,
        help="largest mAP50 loss allowed (default %(default)s)",
    )
    group.add_argument(
        "--max-changed-share",
        type=float,
        default=MAX_CHANGED_SHARE,
        help="largest share of images whose decision may change (default %(default)s)",
    )
    group.add_argument(
        "--guard",
        choices=("refuse", "warn"),
        default="refuse",
        help="when the guard fails: refuse to write (default) or write with a warning",
    )


def _reduced(args: argparse.Namespace) -> ReducedPrecision:
    """The OpenVINO options as a ReducedPrecision; a ValueError when they do not apply."""
    if not is_openvino(args.out) and (args.int8 or args.bf16 or args.calibration):
        raise ValueError("--int8, --bf16 and --calibration apply to OpenVINO: --out model.xml")
    split = None
    if args.calibration:
        images = args.calibration_images or Path(args.calibration).parent
        split = CocoSplit(Path(args.calibration), Path(images))
    bf16 = bool(args.bf16)
    if args.bf16 is None and is_openvino(args.out):
        reason = bf16_unchecked_reason(args.checkpoint, split)
        bf16 = reason is None
        if reason:
            print(f"bf16 not checked ({reason}): the model runs float32")
    return ReducedPrecision(
        int8=args.int8,
        bf16=bf16,
        calibration=split,
        calibration_images=args.calibration_count,
        max_map50_drop=args.max_map50_drop,
        max_changed_share=args.max_changed_share,
        warn_only=args.guard == "warn",
    )


def main(argv: list[str]) -> int:
    """Run `detection export`; returns 0, or 2 with one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        reduced = _reduced(args)
        path = export_model(
            args.checkpoint,
            args.out,
            thresholds=Thresholds.parse(args.threshold),
            report_threshold=args.report_threshold,
            reduced=reduced,
        )
    except (DetectionError, ValueError, OSError, RuntimeError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"detection export: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
