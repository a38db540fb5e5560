"""The review loop on generated data, measured: train, inspect a new lot, send the failed,
uncertain and audit images to a simulated reviewer who answers from the ground truth, import the
corrections, merge them into the training json, fine-tune, and compare on the held-out test split.

    .venv/bin/python scripts/review_loop.py --out results/review_loop [--seed 0]

The reviewer works on a Label Studio full-JSON export written here (no server needed; the
format is the one tests/test_review_label_studio.py reads from a real server). It keeps a shown
box as it is when it matches a ground-truth box (same class, IoU >= 0.5), relabels one that
overlaps with another class, deletes the rest and draws the boxes the model missed.

Fine-tuning runs the same number of steps twice from the first checkpoint: on the merged json
(with the reviewed lot images) and, as a control, on the original training json alone, so the
gain of the corrections is not confused with the gain of more steps. The test split is small:
the escape and false-reject counts carry Wilson 95 % intervals, and one seed is one draw.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from pathlib import Path
from typing import Any

from detection.core.coco_format import read_coco
from detection.data.synthetic import generate_dataset
from detection.demo.pipeline import train
from detection.demo.recipe import load_recipe
from detection.inspect.job import InspectConfig, run_inspect
from detection.review.diff import iou
from detection.review.export import ExportOptions, export_review
from detection.review.importing import ImportOptions, import_review
from detection.review.manifest import read_manifest
from detection.review.report import proportion
from detection.training.checkpoint_eval import evaluate_checkpoint

SPLITS = {"train": 0.3, "lot": 0.4, "val": 0.15, "test": 0.15}


def simulated_answers(tasks: list[dict[str, Any]], truth: dict[str, list[tuple[str, list[float]]]],
                      width: int, height: int) -> list[dict[str, Any]]:  # fmt: skip
    """A full-JSON Label Studio export answering every task from the ground truth."""
    answers = []
    for number, task in enumerate(tasks, start=1):
        shown = task["predictions"][0]["result"]
        image = task["data"]["detection_image"]
        result = []
        used: set[int] = set()
        for k, (name, box) in enumerate(truth.get(image, [])):
            best, overlap = None, 0.0
            for i, region in enumerate(shown):
                v = region["value"]
                x1, y1 = v["x"] * width / 100, v["y"] * height / 100
                mbox = [x1, y1, x1 + v["width"] * width / 100, y1 + v["height"] * height / 100]
                o = iou(mbox, box)
                if i not in used and o > overlap:
                    best, overlap = i, o
            if best is not None and overlap >= 0.5:
                used.add(best)
                kept = copy.deepcopy(shown[best])
                kept["value"]["rectanglelabels"] = [name]  # a relabel when the class differs
                result.append(kept)
                continue
            x1, y1, x2, y2 = box
            result.append({
                "id": f"gt{number}_{k}", "type": "rectanglelabels", "from_name": "label",
                "to_name": "image", "original_width": width, "original_height": height,
                "value": {"x": 100 * x1 / width, "y": 100 * y1 / height,
                          "width": 100 * (x2 - x1) / width, "height": 100 * (y2 - y1) / height,
                          "rotation": 0, "rectanglelabels": [name]},
            })  # fmt: skip
        answers.append({**task, "id": number, "annotations": [
            {"id": number, "result": result, "was_cancelled": False}]})  # fmt: skip
    return answers


def ground_truth(coco: Path, images: Path) -> dict[str, list[tuple[str, list[float]]]]:
    """image path -> [(class name, xyxy)] of a COCO split."""
    data = read_coco(coco)
    names = {c["id"]: c["name"] for c in data["categories"]}
    paths = {i["id"]: str(images / i["file_name"]) for i in data["images"]}
    truth: dict[str, list] = {p: [] for p in paths.values()}
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        truth[paths[a["image_id"]]].append((names[a["category_id"]], [x, y, x + w, y + h]))
    return truth


def figures(checkpoint: Path, test: Path, images: Path) -> dict[str, Any]:
    """Test mAP50, escapes and false rejects (with intervals) of a checkpoint."""
    report = evaluate_checkpoint(checkpoint, test, images, device="cpu").report
    level = report["image_level"]
    return {
        "mAP50": round(report["AP50"], 4),
        "escapes": proportion(level["escapes"], level["defective_images"]),
        "false_rejects": proportion(level["false_rejects"], level["defect_free_images"]),
        "image_level": level,
    }


def _round(out: Path, data: Path, recipe: dict[str, Any], splits: dict[str, Path]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    link = out / "data"
    if not link.exists():
        os.symlink(data.resolve(), link)  # train() reads OUT/data/images
    return train(out, recipe, splits, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=5, help="first training")
    parser.add_argument("--finetune-steps", type=int, default=120)
    parser.add_argument("--audit-fraction", type=float, default=0.1)
    args = parser.parse_args()
    out = args.out
    data = out / "data"
    splits = generate_dataset(data, num_images=args.images, image_size=128, seed=args.seed,
                              splits=SPLITS, max_defects_per_image=6)  # fmt: skip
    images = data / "images"
    recipe = load_recipe("cpu", seed=args.seed, epochs=args.epochs)
    base = {k: splits[k] for k in ("train", "val", "test")}
    first = _round(out / "round0", data, recipe, base)
    before = figures(first, splits["test"], images)
    lot = read_coco(splits["lot"])
    listing = out / "lot.txt"
    listing.write_text(
        "".join(str((images / i["file_name"]).resolve()) + "\n" for i in lot["images"])
    )
    run_inspect(InspectConfig(checkpoint=str(first), inputs=[str(listing)], output=str(out / "inspect"),
                              workers=0, device="cpu", progress=False))  # fmt: skip
    options = ExportOptions(audit_fraction=args.audit_fraction, seed=args.seed,
                            document_root=str(images.resolve()))  # fmt: skip
    export_review(out / "inspect", out / "export", options)
    manifest = read_manifest(out / "export")
    tasks = json.loads((out / "export" / "label_studio_tasks.json").read_text())
    truth = ground_truth(splits["lot"], images.resolve())
    answers = simulated_answers(tasks, truth, 128, 128)
    answered = out / "reviewer_export.json"
    answered.write_text(json.dumps(answers))
    review = import_review(answered, out / "export", out / "import",
                           ImportOptions(images_root=str(images.resolve()), base=str(splits["train"])))  # fmt: skip
    tune = copy.deepcopy(recipe)
    tune["model"]["weights"] = str(first)
    tune["model"]["warmup_iters"] = 0
    # Validate (and keep the best checkpoint) every 30 steps in both runs: by epoch, the merged
    # json's longer epochs would give the reviewed run fewer chances than the control.
    tune["trainer"].update(max_epochs=1000, max_steps=args.finetune_steps,
                           check_val_every_n_epoch=None, val_check_interval=30)  # fmt: skip
    after = _round(out / "round1", data, tune, {**base, "train": out / "import" / "merged.json"})
    control = _round(out / "round1_control", data, tune, base)
    result = {
        "seed": args.seed, "images": {k: len(read_coco(p)["images"]) for k, p in splits.items()},
        "reviewed": {"exported": len(manifest.images), "boxes": review["boxes"],
                     "audit_escape_rate": review["audit_escape_rate"],
                     "reject_precision": review["reject_precision"]},
        "before": before, "after_review": figures(after, splits["test"], images),
        "control_no_review": figures(control, splits["test"], images),
        "finetune_steps": args.finetune_steps,
    }  # fmt: skip
    (out / "review_loop.json").write_text(json.dumps(result, indent=2) + "\n")
    for name in ("before", "after_review", "control_no_review"):
        f = result[name]
        print(f"{name:18s} mAP50 {f['mAP50']:.3f}  escapes {f['escapes']['k']}/{f['escapes']['n']}"
              f"  false rejects {f['false_rejects']['k']}/{f['false_rejects']['n']}")  # fmt: skip
    print(f"reviewed {len(manifest.images)} lot images; boxes {review['boxes']}")


if __name__ == "__main__":
    main()
