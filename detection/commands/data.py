"""`detection data synth|convert|lint`: make, convert and check datasets."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from detection.commands.common import EXIT_USAGE, CommandParser
from detection.core.errors import DetectionError, InvalidInputError, OutputError, first_line
from detection.core.run_folder import output_folder, write_atomic

if TYPE_CHECKING:
    from detection.data.lint import LintResult


LINT_EPILOG = """exit status:
  0  no errors (warnings allowed)
  1  the file has errors (each printed, with a count per kind)
  2  the json cannot be read at all (missing, not a regular file, not UTF-8) or a bad
     argument: one error line"""


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="detection data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="generate a synthetic defect dataset (COCO)")
    synth.add_argument("--out", required=True, type=Path, help="output folder")
    synth.add_argument("--images", type=int, default=200, help="total number of images")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=256, help="image side in pixels")
    synth.add_argument(
        "--negative-fraction", type=float, default=0.15, help="share of defect-free images"
    )
    synth.add_argument("--max-defects", type=int, default=3, help="most defects in one image")

    convert = sub.add_parser(
        "convert",
        help="convert annotations between VOC / YOLO and COCO",
        description="voc|yolo -> coco: --annotations is the XML/txt folder, --classes the class list, "
        "--out the json. coco -> voc|yolo: --annotations is the json, --out the folder to write.",
    )
    convert.add_argument("--from", dest="source", required=True, choices=["voc", "yolo", "coco"])
    convert.add_argument("--to", dest="target", required=True, choices=["voc", "yolo", "coco"])
    convert.add_argument("--images", required=True, type=Path, help="image folder")
    convert.add_argument(
        "--annotations", required=True, type=Path, help="annotation folder or COCO json"
    )
    convert.add_argument(
        "--classes",
        type=Path,
        help="class list, one name per line, in category id order (yolo -> coco; voc -> coco "
        "reads the names from the XML files when omitted, sorted, and writes classes.txt)",
    )
    convert.add_argument("--out", required=True, type=Path, help="output json (to coco) or folder")
    convert.add_argument(
        "--boxes",
        choices=["clip", "reject"],
        default="clip",
        help="boxes reaching outside their image: clip them to it and count them (default), or "
        "reject the conversion with an error naming the box",
    )

    lint = sub.add_parser(
        "lint",
        help="check a COCO file and its images (exit 1 on errors)",
        epilog=LINT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lint.add_argument("annotations", type=Path, help="COCO json")
    lint.add_argument("--images", type=Path, help="image folder that file_name is relative to")
    lint.add_argument("--decode", action="store_true", help="fully decode every image (slower)")
    lint.add_argument(
        "--max-pixels",
        type=int,
        help="images with more pixels are errors, with or without --decode (default: the same "
        "limit as inspect and training; 0: no limit)",
    )
    lint.add_argument("--json", action="store_true", help="print the result as json")
    lint.add_argument("--max-lines", type=int, default=50, help="findings printed per kind")
    return parser


def _check_synth(args: argparse.Namespace) -> None:
    """Refuse settings that would fail deep inside, or write a dataset with an empty split."""
    from detection.data.synthetic import DEFAULT_SPLITS, MIN_DEFECT_SIZE, split_counts

    if args.size < MIN_DEFECT_SIZE:
        raise InvalidInputError(
            None, f"--size must be at least {MIN_DEFECT_SIZE} pixels, got {args.size}"
        )
    if not 0.0 <= args.negative_fraction <= 1.0:
        raise InvalidInputError(
            None, f"--negative-fraction must be in 0..1, got {args.negative_fraction}"
        )
    if args.max_defects < 1:
        raise InvalidInputError(None, f"--max-defects must be at least 1, got {args.max_defects}")
    counts = split_counts(max(args.images, 0), DEFAULT_SPLITS)
    empty = [split for split, count in counts.items() if count == 0]
    if empty:
        least = next(n for n in range(1, 100) if min(split_counts(n, DEFAULT_SPLITS).values()))
        raise InvalidInputError(
            None,
            f"--images {args.images} leaves no image for {', '.join(empty)} (the splits take "
            f"{DEFAULT_SPLITS}); use at least {least}",
        )
    if args.out.exists() and not args.out.is_dir():
        raise OutputError(args.out, "is a file; --out names the folder to write the dataset into")


def _synth(args: argparse.Namespace) -> int:
    from detection.data.synthetic import generate_dataset

    _check_synth(args)
    start = time.perf_counter()
    paths = generate_dataset(
        args.out,
        num_images=args.images,
        image_size=args.size,
        seed=args.seed,
        negative_fraction=args.negative_fraction,
        max_defects_per_image=args.max_defects,
    )
    for split, path in paths.items():
        data = json.loads(path.read_text())
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} boxes -> {path}")
    print(f"images under {Path(args.out) / 'images'} ({time.perf_counter() - start:.1f} s)")
    return 0


def _write_voc_classes(coco: dict, out: Path) -> None:
    """Print the classes read from VOC files and keep them as classes.txt beside the json."""
    names = [c["name"] for c in coco["categories"]]
    if not names:
        raise InvalidInputError(None, "the XML files name no objects; pass --classes")
    path = output_folder(out.parent) / "classes.txt"
    write_atomic(path, "".join(f"{name}\n" for name in names))
    print(f"classes (from the XML files, sorted): {', '.join(names)}")
    print(f"wrote {path}; convert other splits with --classes {path} to keep the same ids")


def _convert(args: argparse.Namespace) -> int:
    from detection.data import formats

    if (args.source == "coco") == (args.target == "coco"):
        raise InvalidInputError(
            None, f"convert goes between coco and voc/yolo, not {args.source} -> {args.target}"
        )
    _check_convert_out(args.out, args.target)
    if args.target == "coco":
        if args.classes is None and args.source == "yolo":
            raise InvalidInputError(None, "--classes is required to convert yolo to coco")
        classes = formats.read_classes(args.classes) if args.classes is not None else None
        reader = formats.voc_to_coco if args.source == "voc" else formats.yolo_to_coco
        with _printed_warnings():
            coco = reader(args.images, args.annotations, classes, boxes=args.boxes)
        if classes is None:
            _write_voc_classes(coco, Path(args.out))
        formats.save_coco(coco, args.out)
        print(f"{len(coco['images'])} images, {len(coco['annotations'])} boxes -> {args.out}")
        return 0
    coco = formats.load_coco(args.annotations)
    writer = formats.coco_to_voc if args.target == "voc" else formats.coco_to_yolo
    with _printed_warnings():
        written = writer(coco, args.out, boxes=args.boxes)
    # Every annotation is written (its image and category are checked), or the run fails.
    print(f"{len(written)} {args.target} files, {len(coco['annotations'])} boxes -> {args.out}")
    return 0


def _check_convert_out(out: Path, target: str) -> None:
    """--out is a json file for coco and a folder for voc/yolo: refuse the wrong kind first."""
    if target == "coco":
        if out.is_dir():
            raise OutputError(out, "is a folder; --out names the COCO json file to write")
        parent = next((p for p in out.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise OutputError(parent, f"is a file, not a folder to write {out.name} into")
    elif out.exists() and not out.is_dir():
        raise OutputError(out, f"is a file; --out names the folder to write {target} files into")


@contextlib.contextmanager
def _printed_warnings() -> Iterator[None]:
    """A conversion's warnings (clipped boxes, files without a partner) as lines on stderr."""
    from detection.data.box_policy import ConversionWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConversionWarning)
        yield
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)


def _lint(args: argparse.Namespace) -> int:
    from detection.core.images import MAX_PIXELS
    from detection.data.lint import KINDS, lint_coco

    max_pixels = MAX_PIXELS if args.max_pixels is None else args.max_pixels or None
    result = lint_coco(
        args.annotations, args.images, decode_images=args.decode, max_pixels=max_pixels
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0 if result.ok else 1
    shown: dict[str, int] = {}
    for finding in result.findings:
        shown[finding.kind] = shown.get(finding.kind, 0) + 1
        if shown[finding.kind] <= args.max_lines:
            print(finding)
    for kind, count in shown.items():
        if count > args.max_lines:
            print(f"... {count - args.max_lines} more {kind}")
    _print_summary(result, KINDS)
    return 0 if result.ok else 1


def _print_summary(result: LintResult, kinds: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    counts = result.counts()
    console = Console(highlight=False)
    console.print(
        f"{result.file}: {result.num_images} images, {result.num_annotations} boxes, "
        f"{result.num_categories} categories",
        soft_wrap=True,
    )
    if counts:
        table = Table()
        table.add_column("kind")
        table.add_column("severity")
        table.add_column("count", justify="right")
        for kind, count in counts.items():
            table.add_row(kind, kinds[kind], str(count))
        console.print(table)
    verdict = "OK" if result.ok else "FAILED"
    console.print(f"{verdict}: {len(result.errors)} errors, {len(result.warnings)} warnings")


def main(argv: list[str]) -> int:
    """Run `detection data ...`; returns the process exit code."""
    args = _parser().parse_args(argv)
    handlers = {"synth": _synth, "convert": _convert, "lint": _lint}
    try:
        return handlers[args.command](args)
    except DetectionError as exc:
        # The top-level CLI may also catch this; printing here keeps `main` usable on its own.
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
