"""Convert DeepPCB (official trainval / test splits) to COCO json.

    python scripts/convert_deeppcb.py --root ../shared/datasets/deeppcb --out data/deeppcb

writes OUT/trainval.json and OUT/test.json; their file_name entries are relative to --root,
so train with images_dir=--root.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from detection import InvalidInputError, convert_deeppcb


def main(argv: list[str] | None = None) -> int:
    """Run the conversion; returns the exit code."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--root", type=Path, required=True, help="DeepPCB folder (holds trainval.txt, test.txt)"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="folder for trainval.json and test.json"
    )
    args = parser.parse_args(argv)
    try:
        paths = convert_deeppcb(args.root, args.out)
    except InvalidInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for split, path in paths.items():
        data = json.loads(path.read_text())
        print(f"{split}: {len(data['images'])} images, {len(data['annotations'])} boxes -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
