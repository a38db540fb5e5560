"""`detection review export|import`: send images to Label Studio / CVAT, bring corrections back."""

from __future__ import annotations

import argparse
import os
import sys

from detection.commands.common import EXIT_OK, EXIT_USAGE, CommandParser
from detection.core.errors import DetectionError, first_line
from detection.core.thresholds import Thresholds

EXPORT_EPILOG = """\
outputs (in --out):
  label_studio_tasks.json    Basic Label Studio JSON, one task per image, the shown boxes as
                             predictions (stable result ids, per-box score, percent coordinates)
  label_studio_config.xml    the labelling config for the classes
  cvat_annotations.xml       CVAT for images 1.1, the boxes as source="auto" pre-annotations
  review_manifest.json       what was shown; `detection review import` needs it

Images reach Label Studio as local files by default: start the server with
LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT set
to --document-root (default: the folder that holds every chosen image), or pass --url-prefix.
With --url the tasks are imported into a project (created, or reused by --project title);
the API token comes from the environment variable --token-env names.

exit status: 0 written; 2 bad arguments or input, or the server refused (one line on stderr)
"""

IMPORT_EPILOG = """\
outputs (in --out): review_diff.jsonl (per image: per-box kinds confirmed / moved / relabelled /
removed / added, both verdicts), corrected.json (the reviewed images as COCO), merged.json (with
--base), review_report.json and review_report.md. Skipped, cancelled and unanswered tasks and
images no longer on disk are counted and left out.

Next step, fine-tune the previous checkpoint on the merged json:
  detection fit --config <recipe> --data.train_annotations OUT/merged.json \\
    --data.train_images <images root> --model.weights <best.ckpt>

exit status: 0 written; 2 bad arguments or input (one line on stderr, naming task and field)
"""


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="detection review", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser(
        "export", help="choose images of an inspect job for review and write tasks",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    export.add_argument("--inspect", required=True, help="an inspect output folder")
    export.add_argument("--out", required=True, help="folder for the task files")
    export.add_argument(
        "--select", nargs="+", default=["failed", "uncertain", "audit"],
        choices=["failed", "uncertain", "audit", "disagree", "listed"],
        help="rules, highest priority first (default: failed uncertain audit)",
    )  # fmt: skip
    export.add_argument(
        "--band", action="append", metavar="VALUE|CLASS=VALUE",
        help="half-width of the uncertain band around each class threshold (default 0.1)",
    )  # fmt: skip
    export.add_argument("--audit-fraction", type=float, default=0.05,
                        help="share of passed images drawn for the audit (default 0.05)")  # fmt: skip
    export.add_argument("--seed", type=int, default=0, help="seed of the audit sample")
    export.add_argument("--limit", type=int, help="at most this many images")
    export.add_argument("--ground-truth", help="COCO json, for the 'disagree' rule")
    export.add_argument("--ground-truth-images", help="folder its file_names are relative to")
    export.add_argument("--images", nargs="+", default=[], help="image paths, for 'listed'")
    export.add_argument("--document-root", help="Label Studio's local files document root")
    export.add_argument("--url-prefix", help="serve images from this URL prefix instead")
    export.add_argument("--cvat-root", help="name images in CVAT by their path below this")
    export.add_argument("--url", help="a running Label Studio server: import the tasks there")
    export.add_argument("--project", help="Label Studio project title (created when missing)")
    export.add_argument("--token-env", default="LABEL_STUDIO_API_KEY",
                        help="environment variable holding the API token (default %(default)s)")  # fmt: skip

    imp = sub.add_parser(
        "import", help="import a Label Studio / CVAT export of the reviewed tasks",
        epilog=IMPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    imp.add_argument("export", help="Label Studio JSON / JSON-MIN export, or CVAT 1.1 XML (.xml)")
    imp.add_argument("--manifest", required=True, help="review_manifest.json (or its folder)")
    imp.add_argument("--out", required=True, help="folder for the diff, COCO and report")
    imp.add_argument(
        "--images-root",
        help="COCO file_names are paths below it (needed with --base: the training images folder)",
    )
    imp.add_argument("--base", help="a training COCO json to merge the corrections into")
    imp.add_argument("--replace-reviewed", action="store_true",
                     help="an image --base already holds: keep the latest review")  # fmt: skip
    imp.add_argument("--extend-classes", action="store_true",
                     help="add reviewed classes --base lacks as new categories")  # fmt: skip
    imp.add_argument("--cvat-root", help="as given to the export")
    return parser


def _export(args: argparse.Namespace) -> int:
    from detection.review.export import DEFAULT_BAND, ExportOptions, export_review

    band = Thresholds.parse(args.band) if args.band else DEFAULT_BAND
    options = ExportOptions(
        rules=args.select, band=band, audit_fraction=args.audit_fraction, seed=args.seed,
        limit=args.limit, ground_truth=args.ground_truth,
        ground_truth_images=args.ground_truth_images, listed=args.images,
        document_root=args.document_root, url_prefix=args.url_prefix, cvat_root=args.cvat_root,
    )  # fmt: skip
    token = None
    if args.url:
        token = os.environ.get(args.token_env)
        if not token:
            print(f"error: --url needs an API token in ${args.token_env}", file=sys.stderr)
            return EXIT_USAGE
    manifest = export_review(
        args.inspect, args.out, options, url=args.url, token=token, project_title=args.project
    )
    reasons = {}
    for item in manifest.images:
        reasons[item.reasons[0]] = reasons.get(item.reasons[0], 0) + 1
    where = f"; imported into project {manifest.project_id}" if manifest.project_id else ""
    print(f"{len(manifest.images)} images for review {reasons} -> {args.out}{where}")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    from detection.review.importing import ImportOptions, import_review

    options = ImportOptions(
        images_root=args.images_root, base=args.base, replace_reviewed=args.replace_reviewed,
        extend_classes=args.extend_classes, cvat_root=args.cvat_root,
    )  # fmt: skip
    report = import_review(args.export, args.manifest, args.out, options)
    print(f"{report['reviewed_images']} reviewed images, boxes {report['boxes']}, "
          f"tasks {report['tasks']} -> {args.out}")  # fmt: skip
    return EXIT_OK


def main(argv: list[str]) -> int:
    """Run `detection review ...`; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        return _export(args) if args.command == "export" else _import(args)
    except (DetectionError, ValueError) as exc:
        print(f"error: {first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
