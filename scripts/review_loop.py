"""The review loop on generated data, measured: `detection demo --review` under another name,
kept because the README's figures were measured with it. Train, inspect a new lot, send the
failed, uncertain and audit images to a simulated reviewer who answers from the ground truth,
import the corrections, merge, fine-tune, and compare on the test split.

    .venv/bin/python scripts/review_loop.py --out results/review_loop [--seed 0]

Takes the options of `detection demo --review` (--images, --epochs, --finetune-steps,
--audit-fraction, --seed, --no-progress). The loop lives in detection/demo/review_loop.py
(run_review_loop); its docstring says what is written and what a re-run reuses.
"""

from __future__ import annotations

import sys

from detection.commands.demo import main

if __name__ == "__main__":
    sys.exit(main(["--review", *sys.argv[1:]]))
