"""The review loop on generated data, measured (the same as `detection demo --review`): train,
inspect a new lot, send the failed, uncertain and audit images to a simulated reviewer who answers
from the ground truth, import the corrections, merge, fine-tune, and compare on the test split.

    .venv/bin/python scripts/review_loop.py --out results/review_loop [--seed 0]

The loop lives in detection/demo/review_loop.py (run_review_loop); see its docstring for what
is written and what a re-run reuses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from detection.demo.review_loop import run_review_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=5, help="first training")
    parser.add_argument("--finetune-steps", type=int, default=120)
    parser.add_argument("--audit-fraction", type=float, default=0.1)
    args = parser.parse_args()
    result = run_review_loop(
        args.out,
        seed=args.seed,
        images=args.images,
        epochs=args.epochs,
        finetune_steps=args.finetune_steps,
        audit_fraction=args.audit_fraction,
        progress=False,
    )
    for name in ("before", "after_review", "control_no_review"):
        f = result[name]
        print(f"{name:18s} mAP50 {f['mAP50']:.3f}  escapes {f['escapes']['k']}/{f['escapes']['n']}"
              f"  false rejects {f['false_rejects']['k']}/{f['false_rejects']['n']}")  # fmt: skip
    print(f"reviewed {result['reviewed']['exported']} lot images; boxes "
          f"{json.dumps(result['reviewed']['boxes'])}")  # fmt: skip


if __name__ == "__main__":
    main()
