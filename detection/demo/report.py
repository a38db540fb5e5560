"""The demo's report: stage timings, key figures, example images and OUT/report/README.md."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from detection.demo.recipe import describe_training


class Timings:
    """Wall and CPU seconds per stage, kept in OUT/timings.json across re-runs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stages: dict[str, dict[str, Any]] = (
            json.loads(path.read_text()) if path.exists() else {}
        )

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a stage that runs now; CPU time includes finished child processes (loaders)."""
        wall, cpu = time.perf_counter(), _cpu_seconds()
        yield
        self.stages[name] = {
            "wall_s": round(time.perf_counter() - wall, 2),
            "cpu_s": round(_cpu_seconds() - cpu, 2),
            "reused": False,
        }
        self.save()

    def reused(self, name: str) -> None:
        """Mark a stage skipped because its output exists; its first run's times stay."""
        self.stages.setdefault(name, {"wall_s": None, "cpu_s": None})["reused"] = True
        self.save()

    def save(self) -> None:
        """Write timings.json."""
        self.path.write_text(json.dumps(self.stages, indent=2) + "\n")

    def total(self, key: str) -> float | None:
        """Sum of a column over the stages, None when a stage has no record."""
        values = [s.get(key) for s in self.stages.values()]
        return None if any(v is None for v in values) else round(sum(values), 2)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def draw_examples(
    report_dir: Path,
    gt_path: Path,
    images: Path,
    detector: Any,
    count: int,
) -> list[Path]:
    """Side-by-side PNGs of a few test images: ground truth left, failing detections right."""
    from detection.core.images import read_image
    from detection.inference.draw import draw_boxes, save_image

    gt = json.loads(gt_path.read_text())
    gt_images = sorted(gt["images"], key=lambda image: image["id"])
    if count <= 0 or not gt_images:
        return []
    names = {c["id"]: c["name"] for c in gt["categories"]}
    label_of = {cid: i + 1 for i, cid in enumerate(sorted(names))}
    boxes_of: dict[int, list[dict[str, Any]]] = {}
    for ann in gt["annotations"]:
        boxes_of.setdefault(ann["image_id"], []).append(ann)
    picks = np.unique(np.linspace(0, len(gt_images) - 1, min(count, len(gt_images))).astype(int))
    written = []
    for index in picks:
        image_info = gt_images[index]
        pixels = read_image(images / image_info["file_name"])
        prediction = detector.predict(pixels)[0]
        # Small images are enlarged (nearest neighbour) so that boxes and captions are legible.
        scale = max(1, int(np.ceil(384 / max(pixels.shape[:2]))))
        big = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
        anns = boxes_of.get(image_info["id"], [])
        gt_boxes = np.array(
            [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float32
        ).reshape(-1, 4)
        left = draw_boxes(
            big,
            gt_boxes * scale,
            [f"GT {names[a['category_id']]}" for a in anns],
            [label_of[a["category_id"]] for a in anns],
        )
        keep = prediction.defects
        right = draw_boxes(
            big,
            prediction.boxes[keep] * scale,
            [
                f"{n} {s:.2f}"
                for n, s, k in zip(prediction.class_names, prediction.scores, keep, strict=True)
                if k
            ],
            prediction.labels[keep].tolist(),
        )
        gap = np.full((big.shape[0], 8, 3), 255, dtype=np.uint8)
        path = report_dir / "examples" / f"{Path(image_info['file_name']).stem}.png"
        save_image(path, np.concatenate([left, gap, right], axis=1))
        written.append(path)
    return written


def key_figures(
    recipe: dict[str, Any],
    device: str,
    images: dict[str, int],
    report: dict[str, Any],
    inspection: dict[str, Any],
    timings: Timings,
    training: dict[str, Any],
) -> dict[str, Any]:
    """The numbers a newcomer looks at first."""
    import torch

    level = report["image_level"]
    overall = report["operating_point"]["overall"]
    model = recipe["model"]
    return {
        "model": model.get("model_name"),
        "settings": describe_training(recipe, device),
        "device": device,
        "threads": torch.get_num_threads() if device == "cpu" else None,
        "precision": str(recipe["trainer"].get("precision", "32")),
        "image_size": recipe["synthetic"].get("image_size"),
        "input_size": [model.get("min_size"), model.get("max_size")],
        "images": images,
        "epochs": training.get("epochs"),
        "steps": training.get("global_step"),
        "best_checkpoint": training.get("best"),
        "best_val_mAP": training.get("best_val_mAP"),
        "test": {
            "mAP": report["AP"],
            "mAP50": report["AP50"],
            "AP75": report["AP75"],
            "precision": overall["precision"],
            "recall": overall["recall"],
            "f1": overall["f1"],
            "defective_recall": level["defective_recall"],
            "escape_rate": level["escape_rate"],
            "false_reject_rate": level["false_reject_rate"],
            "thresholds": {
                name: stats["threshold"]
                for name, stats in report["operating_point"]["per_class"].items()
            },
        },
        "inspection": {
            k: inspection[k] for k in ("images", "passed", "failed", "errors", "complete")
        },
        "timings": timings.stages,
        "total_wall_s": timings.total("wall_s"),
        "total_cpu_s": timings.total("cpu_s"),
    }


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_summary(
    out: Path, figures: dict[str, Any], report: dict[str, Any], examples: list[Path]
) -> Path:
    """OUT/report/README.md: model, settings, times per stage, headline metrics, files."""
    test, level = figures["test"], report["image_level"]
    lines = [
        "# detection demo report",
        "",
        f"Model **{figures['model']}** (a torchvision Faster R-CNN): {figures['settings']}. "
        f"Trained {figures['epochs']} epochs / {figures['steps']} steps on "
        f"{figures['images']['train']} synthetic images (val {figures['images']['val']}, "
        f"test {figures['images']['test']}). "
        f"Every setting: `{out / 'recipe.yaml'}`.",
        "",
        f"## Held-out test split ({level['images']} images, checkpoint {figures['best_checkpoint']})",
        "",
        "| metric | value |",
        "|---|---|",
        f"| mAP (COCO, IoU 0.50:0.95) | {_fmt(test['mAP'])} |",
        f"| mAP50 | {_fmt(test['mAP50'])} |",
        f"| mAP75 | {_fmt(test['AP75'])} |",
        f"| box precision / recall / F1 at the calibrated thresholds | "
        f"{_fmt(test['precision'])} / {_fmt(test['recall'])} / {_fmt(test['f1'])} |",
        f"| image level: defective images caught (recall) | {_fmt(test['defective_recall'])} "
        f"({level['defective_failed']} of {level['defective_images']}) |",
        f"| image level: false-reject rate | {_fmt(test['false_reject_rate'])} "
        f"({level['false_rejects']} of {level['defect_free_images']} defect-free) |",
        "",
        "Per-class score thresholds (calibrated on validation, best F1): "
        + ", ".join(f"{k} {v:.2f}" for k, v in test["thresholds"].items()),
        "",
        "## Time per stage",
        "",
        "| stage | wall s | CPU s |",
        "|---|---|---|",
        *(
            f"| {name}{' (reused from an earlier run)' if t.get('reused') else ''} | "
            f"{_fmt(t.get('wall_s'), 1)} | {_fmt(t.get('cpu_s'), 1)} |"
            for name, t in figures["timings"].items()
        ),
        f"| **total** | {_fmt(figures['total_wall_s'], 1)} | {_fmt(figures['total_cpu_s'], 1)} |",
        "",
        "CPU seconds add up all cores; wall seconds are what you waited.",
        "",
        "## Files",
        "",
        "- `metrics.json`: the full evaluation report (12 COCO numbers, per class, operating "
        "point, image level, calibrated thresholds)",
        "- `pr_curves.png`, `f1_vs_threshold.png`, `confusion_matrix.png`",
        f"- `examples/`: {len(examples)} test images, ground truth left, detections that fail "
        "the part right",
        f"- `{out / 'inspection'}`: the inspection job (results/*.jsonl, summary.json, failed/)",
        f"- `{out / 'checkpoints'}`: use the best checkpoint with `detection inspect`",
        "",
    ]
    path = out / "report" / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
