"""`detection demo`: generate data, train, evaluate, run an inspection job and write a report;
with --review, the review loop (inspect a lot, simulated review, fine-tune) before and after."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from detection.commands.common import CommandParser, score
from detection.core.thresholds import add_threshold_argument

DEFAULT_OUT = {False: Path("runs/demo"), True: Path("runs/review_loop")}
# Options of the plain demo that the review loop does not take (it runs the CPU recipe).
NOT_WITH_REVIEW = ("config", "steps", "threshold", "print_config")
# Given on the command line, these go to run_review_loop, whose defaults apply otherwise.
REVIEW_OPTIONS = {
    "images": "images",
    "size": "image_size",
    "epochs": "epochs",
    "seed": "seed",
    "finetune_steps": "finetune_steps",
    "audit_fraction": "audit_fraction",
}


def _positive(text: str) -> int:
    """argparse type of a count of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `detection demo`."""
    parser = CommandParser(
        prog="detection demo",
        description="The whole product on generated defect data: data, training, evaluation on "
        "held-out images, an inspection job and a report folder. Re-running with the same --out "
        "reuses the data and a finished training (or resumes it from last.ckpt).",
    )
    parser.add_argument(
        "--out", type=Path, help="output folder (default runs/demo, with --review runs/review_loop)"
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="auto: CUDA when visible; picks the recipe demo_cpu.yaml or demo_gpu.yaml (packaged "
        "in detection/demo/recipes/; configs/ in the repository links to them)",
    )
    parser.add_argument(
        "--config", type=Path, help="another recipe (e.g. an edited copy of configs/demo_cpu.yaml)"
    )
    parser.add_argument("--images", type=int, help="total synthetic images (train+val+test)")
    parser.add_argument("--size", type=int, help="image side in pixels (also the model's input)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--epochs", type=int, help="training epochs")
    group.add_argument("--steps", type=int, help="training steps (validates at the last one)")
    parser.add_argument("--seed", type=int, help="seed of data generation and training")
    add_threshold_argument(
        parser, "for the test evaluation and the inspection; default: calibrated on validation"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved recipe and exit"
    )
    review = parser.add_argument_group(
        "review loop",
        "--review runs the review loop on generated data instead, on CPU with the CPU recipe: "
        "train (--epochs, default 5, on --images, default 400, of --size 128 px, split "
        "30/40/15/15 % into train, lot, val, test), inspect the lot, export its failed, "
        "uncertain and audit images, answer them with a reviewer simulated from the ground "
        "truth, import and merge the corrections, fine-tune with them and, as a control, as long "
        "without; then print test mAP50, escapes and false rejects before and after "
        "(OUT/review_loop.json, OUT/review_loop.md). A re-run with the same --out and options "
        "reuses every finished stage.",
    )
    review.add_argument("--review", action="store_true", help="run the review loop")
    review.add_argument(
        "--finetune-steps", type=_positive, help="steps of each fine-tune (default 120)"
    )
    review.add_argument(
        "--audit-fraction", type=score, help="share of the lot's passed images audited (0.1)"
    )
    return parser


def _review_table(result: dict, out: Path) -> str:
    from detection.demo.loop_summary import RUNS

    def share(p: dict) -> str:
        return f"{p['k']}/{p['n']}" + ("" if p["rate"] is None else f" ({p['rate']:.3f})")

    reviewed = result["reviewed"]
    lines = ["", f"{'run':40s} {'mAP50':>6s}  {'escapes':14s} false rejects"]
    for name, title in RUNS.items():
        f = result[name]
        lines.append(
            f"{title:40s} {f['mAP50']:6.3f}  {share(f['escapes']):14s} {share(f['false_rejects'])}"
        )
    lines += [
        "",
        f"reviewed   {reviewed['exported']} lot images; boxes {reviewed['boxes']}",
        f"summary    {out / 'review_loop.md'} (Wilson 95 % intervals), {out / 'review_loop.json'}",
    ]
    return "\n".join(lines)


def _run_review(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from detection.demo.review_loop import run_review_loop

    refused = [name for name in NOT_WITH_REVIEW if getattr(args, name) not in (None, False)]
    if refused:
        parser.error(f"--{refused[0].replace('_', '-')} does not go with --review")
    if args.device == "cuda":
        parser.error("--review runs on CPU (the loop's measured recipe); leave out --device cuda")
    out = args.out or DEFAULT_OUT[True]
    given = {
        argument: getattr(args, option)
        for option, argument in REVIEW_OPTIONS.items()
        if getattr(args, option) is not None
    }
    print(f"detection demo --review: output {out}")
    result = run_review_loop(out, **given, progress=not args.no_progress)
    print(_review_table(result, out))
    sys.stdout.flush()
    return 0


def _headline(figures: dict, out: Path) -> str:
    test, inspection = figures["test"], figures["inspection"]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    wall, cpu = figures["total_wall_s"], figures["total_cpu_s"]
    return "\n".join(
        [
            "",
            f"model      {figures['model']} on {figures['device']}, precision "
            f"{figures['precision']}, {figures['epochs']} epochs / {figures['steps']} steps",
            f"test       mAP {fmt(test['mAP'])}  mAP50 {fmt(test['mAP50'])}  "
            f"(images {figures['images']['test']})",
            f"images     defective caught {fmt(test['defective_recall'])}  "
            f"false-reject rate {fmt(test['false_reject_rate'])}",
            f"inspection {inspection['images']} images: {inspection['failed']} failed, "
            f"{inspection['passed']} passed, {inspection['errors']} errors",
            f"time       {'-' if wall is None else f'{wall:.0f}'} s wall, "
            f"{'-' if cpu is None else f'{cpu:.0f}'} s CPU",
            "",
            f"report     {out / 'report' / 'README.md'}  (metrics.json, plots, examples/)",
            f"inspection {out / 'inspection'}",
            f"checkpoint {out / 'checkpoints' / str(figures['best_checkpoint'])}",
            f"recipe     {out / 'recipe.yaml'}",
        ]
    )


def main(argv: list[str]) -> int:
    """Run `detection demo`; errors reach the CLI as DetectionError (one line, exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.review:
        return _run_review(args, parser)
    for name in ("finetune_steps", "audit_fraction"):
        if getattr(args, name) is not None:
            parser.error(f"--{name.replace('_', '-')} goes with --review only")
    out = args.out or DEFAULT_OUT[False]
    from detection.demo.pipeline import load_recipe, run_demo
    from detection.inference.predictor import resolve_device

    device = resolve_device(args.device).type
    recipe = load_recipe(
        device,
        args.config,
        images=args.images,
        size=args.size,
        epochs=args.epochs,
        steps=args.steps,
        seed=args.seed,
        threshold=args.threshold,
    )
    if args.print_config:
        print(yaml.safe_dump(recipe, sort_keys=False), end="")
        return 0
    print(f"detection demo: recipe {recipe['source']}, device {device}, output {out}")
    figures = run_demo(out, recipe, device=device, progress=not args.no_progress)
    print(_headline(figures, out))
    sys.stdout.flush()
    return 0
