"""`detection demo`: generate data, train, evaluate, run an inspection job and write a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from detection.core.thresholds import add_threshold_argument


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `detection demo`."""
    parser = argparse.ArgumentParser(
        prog="detection demo",
        description="The whole product on generated defect data: data, training, evaluation on "
        "held-out images, an inspection job and a report folder. Re-running with the same --out "
        "reuses the data and a finished training (or resumes it from last.ckpt).",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
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
    return parser


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
    args = build_parser().parse_args(argv)
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
    print(f"detection demo: recipe {recipe['source']}, device {device}, output {args.out}")
    figures = run_demo(args.out, recipe, device=device, progress=not args.no_progress)
    print(_headline(figures, args.out))
    sys.stdout.flush()
    return 0
