"""Hold out a random share of a COCO file's images: for DeepPCB, whose trainval has no val split.

    python scripts/split_coco.py data/deeppcb/trainval.json --holdout 0.1 --seed 0 \
        --out data/deeppcb/train.json data/deeppcb/val.json

Images are drawn at random (seeded) and keep their ids, annotations and categories; the two
outputs together are exactly the input. Checkpoint selection and threshold calibration can
then use the held-out images while the official test split stays untouched.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any


def split_coco(
    coco: dict[str, Any], holdout: float, seed: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(kept, held out): the held-out part has round(holdout * images) images, at least one."""
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    ids = sorted(image["id"] for image in coco["images"])
    count = max(1, round(holdout * len(ids)))
    held = set(random.Random(seed).sample(ids, count))

    def part(keep: bool) -> dict[str, Any]:
        return {
            **coco,
            "images": [im for im in coco["images"] if (im["id"] in held) != keep],
            "annotations": [a for a in coco["annotations"] if (a["image_id"] in held) != keep],
        }

    return part(True), part(False)


def main(argv: list[str] | None = None) -> int:
    """Write the two parts; returns the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("annotations", type=Path, help="COCO json to split")
    parser.add_argument("--holdout", type=float, default=0.1, help="share of images held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, nargs=2, required=True, metavar=("KEPT", "HELD_OUT"), help="outputs"
    )
    args = parser.parse_args(argv)
    coco = json.loads(args.annotations.read_text())
    for part, path in zip(split_coco(coco, args.holdout, args.seed), args.out, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(part))
        print(f"{path}: {len(part['images'])} images, {len(part['annotations'])} boxes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
