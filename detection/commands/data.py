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

from detection.core.errors import InvalidInputError

if TYPE_CHECKING:
    from detection.data.lint import LintResult


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detection data", description=__doc__)
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

    lint = sub.add_parser("lint", help="check a COCO file and its images")
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


def _synth(args: argparse.Namespace) -> int:
    from detection.data.synthetic import generate_dataset

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
    path = out.parent / "classes.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in names))
    print(f"classes (from the XML files, sorted): {', '.join(names)}")
    print(f"wrote {path}; convert other splits with --classes {path} to keep the same ids")


def _convert(args: argparse.Namespace) -> int:
    from detection.data import formats

    if (args.source == "coco") == (args.target == "coco"):
        raise InvalidInputError(
            None, f"convert goes between coco and voc/yolo, not {args.source} -> {args.target}"
        )
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
    except InvalidInputError as exc:
        # The top-level CLI may also catch this; printing here keeps `main` usable on its own.
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
