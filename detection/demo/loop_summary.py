"""The review loop's figures: test mAP50, escapes and false rejects of a checkpoint (with Wilson
95 % intervals), and the Markdown summary comparing the runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detection.core.run_folder import write_atomic
from detection.review.report import proportion

FIGURES_FILE = "test_figures.json"
RUNS = {
    "before": "before review (round0)",
    "after_review": "fine-tuned with the review (round1)",
    "control_no_review": "control: fine-tuned as long, no review",
}


def figures(checkpoint: Path, test: Path, images: Path, folder: Path) -> dict[str, Any]:
    """Test mAP50, escapes and false rejects (with intervals) of a checkpoint, kept in
    FOLDER/test_figures.json and reused while the checkpoint and the split are the same."""
    from detection.training.checkpoint_eval import evaluate_checkpoint

    cache = folder / FIGURES_FILE
    stat = checkpoint.stat()
    key = {"checkpoint": str(checkpoint), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
           "test": str(test)}  # fmt: skip
    if cache.exists():
        kept = json.loads(cache.read_text(encoding="utf-8"))
        if kept.get("key") == key:
            return kept["figures"]
    report = evaluate_checkpoint(checkpoint, test, images, device="cpu").report
    level = report["image_level"]
    result = {
        "mAP50": round(report["AP50"], 4),
        "escapes": proportion(level["escapes"], level["defective_images"]),
        "false_rejects": proportion(level["false_rejects"], level["defect_free_images"]),
        "image_level": level,
    }
    write_atomic(cache, json.dumps({"key": key, "figures": result}, indent=2) + "\n")
    return result


def _share(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "n/a (no such images)"
    return f"{p['k']}/{p['n']} ({p['rate']:.3f}; {p['low']:.3f}-{p['high']:.3f})"


def markdown(result: dict[str, Any]) -> str:
    """The summary table of a review loop's result (`run_review_loop`'s return value)."""
    settings, images, reviewed = result["settings"], result["images"], result["reviewed"]
    counts = ", ".join(f"{k} {v}" for k, v in images.items())
    boxes = ", ".join(f"{k} {v}" for k, v in reviewed["boxes"].items())
    epochs = f"{settings['epochs']} epoch{'s' if settings['epochs'] != 1 else ''}"
    lines = [
        f"# Review loop (seed {result['seed']})",
        "",
        f"Generated data, {settings['image_size']} px: {counts} images. The first training ran "
        f"{epochs}; the inspect job over the lot sent {reviewed['exported']} images "
        f"(failed, uncertain and an audit of {settings['audit_fraction']:.0%} of the "
        f"passed) to a reviewer simulated from the ground truth (boxes: {boxes}). Both fine-tunes "
        f"ran {result['finetune_steps']} steps from the first checkpoint, one on the training "
        "json merged with the corrections, the control on the training json alone.",
        "",
        "| run | test mAP50 | escapes (defective images passed) | false rejects "
        "(defect-free images failed) |",
        "| --- | ---: | --- | --- |",
    ]
    for name, title in RUNS.items():
        f = result[name]
        cells = [title, f"{f['mAP50']:.3f}", _share(f["escapes"]), _share(f["false_rejects"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Counts are k/n (rate; Wilson 95 % interval). The test split is small and one seed is one "
        "draw: differences inside the intervals are noise.",
        "",
    ]
    return "\n".join(lines)
