"""The built-in demo: synthetic defect data -> training -> test evaluation -> inspection -> report.

Every stage writes into one folder and is skipped on a re-run when its output is complete:

    OUT/recipe.yaml       the settings actually used (the packaged recipe plus command-line overrides)
    OUT/data/             generated COCO data: annotations/{train,val,test}.json, images/
    OUT/checkpoints/      best-*.ckpt (by val/mAP), last.ckpt, training.json once training ended
    OUT/logs/             TensorBoard events and CSV metrics (`tensorboard --logdir OUT/logs`)
    OUT/inspection/       the batch inspection job over the test images (JSONL, summary.json, failed/)
    OUT/report/           metrics.json, plots, examples/, README.md, summary.json
    OUT/timings.json      wall and CPU seconds per stage
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detection.errors import DetectionError
from detection.thresholds import Thresholds

# Packaged with the code (configs/demo_*.yaml link here, for users to copy and edit).
RECIPE_DIR = resources.files("detection") / "recipes"
RECIPES = {"cpu": "demo_cpu.yaml", "cuda": "demo_gpu.yaml"}
SECTIONS = ("seed", "synthetic", "model", "data", "trainer", "inspect", "report")
SPLITS = ("train", "val", "test")


# ----------------------------------------------------------------------------------- recipe


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without one is an error."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise DetectionError("--device cuda requested but no CUDA device is visible")
    return device


def load_recipe(
    device: str = "cpu",
    config: str | Path | None = None,
    *,
    images: int | None = None,
    size: int | None = None,
    epochs: int | None = None,
    steps: int | None = None,
    seed: int | None = None,
    threshold: list[str] | None = None,
) -> dict[str, Any]:
    """The demo settings: the device's packaged recipe (or `config`) plus overrides.

    ``threshold`` holds `--threshold` values ('0.6', 'scratch=0.4'): the decision thresholds of
    the test evaluation and the inspection instead of the calibrated ones.
    """
    path = Path(config) if config is not None else RECIPE_DIR / RECIPES[device]
    if not path.is_file():
        raise DetectionError(f"{path}: demo recipe not found; pass one with --config")
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(recipe) - set(SECTIONS))
    if unknown:
        raise DetectionError(f"{path}: unknown sections {unknown}; known: {list(SECTIONS)}")
    for section in SECTIONS[1:]:
        recipe.setdefault(section, {})
    recipe.setdefault("seed", 0)
    if seed is not None:
        recipe["seed"] = seed
    if threshold:
        try:
            Thresholds.parse(threshold)  # a bad value fails now, not after training
        except ValueError as error:
            raise DetectionError(str(error)) from None
        recipe["inspect"]["thresholds"] = list(threshold)
    if images is not None:
        recipe["synthetic"]["num_images"] = images
    if size is not None:
        # The model sees the images at their own size: no resampling of small defects.
        recipe["synthetic"]["image_size"] = size
        recipe["model"]["min_size"] = size
        recipe["model"]["max_size"] = size
    trainer = recipe["trainer"]
    if epochs is not None:
        trainer.update(max_epochs=epochs, max_steps=-1)
    if steps is not None:
        # Validate exactly at the last step so that a best checkpoint with thresholds exists.
        trainer.update(
            max_steps=steps, max_epochs=-1, val_check_interval=steps, check_val_every_n_epoch=None
        )
    trainer["accelerator"] = "gpu" if device == "cuda" else "cpu"
    if device == "cpu" and str(trainer.get("precision", "32")) != "32":
        # Lightning has no float16 on CPU, and bf16 autocast there is slower than float32.
        trainer["precision"] = "32"
    recipe["source"] = str(path)
    return recipe


def describe_training(recipe: dict[str, Any], device: str) -> str:
    """One line naming the model and the settings that decide training time and accuracy."""
    import torch

    model, trainer, data = recipe["model"], recipe["trainer"], recipe["data"]
    threads = f", {torch.get_num_threads()} threads" if device == "cpu" else ""
    length = (
        f"{trainer['max_steps']} steps"
        if trainer.get("max_steps", -1) not in (None, -1)
        else f"{trainer.get('max_epochs')} epochs"
    )
    weights = model.get("weights") or model.get("weights_backbone")
    start = f"weights {weights}" if weights else "random init"
    return (
        f"{model.get('model_name')} from {start} at {model.get('min_size')} px, "
        f"{model.get('optimizer', 'sgd')} lr {model.get('lr')}, batch {data.get('batch_size')}, "
        f"{length}, on {device}{threads}, precision {trainer.get('precision', '32')}"
    )


def _claim(out: Path, recipe: dict[str, Any]) -> None:
    """Record the recipe in OUT/recipe.yaml, or check that a re-run uses the same one."""
    path = out / "recipe.yaml"
    settings = {k: v for k, v in recipe.items() if k != "source"}
    if path.exists():
        recorded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        recorded.pop("source", None)
        changed = [k for k in SECTIONS if recorded.get(k) != settings.get(k)]
        if changed:
            key = changed[0]
            raise DetectionError(
                f"{out} holds a demo run with other settings ({key}: {recorded.get(key)!r} there, "
                f"{settings.get(key)!r} now); use another --out or delete that folder"
            )
        return
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")


# ----------------------------------------------------------------------------------- timing


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


# ----------------------------------------------------------------------------------- stages


def make_data(out: Path, recipe: dict[str, Any]) -> dict[str, Path]:
    """Generate the synthetic train/val/test splits into OUT/data (unless already there)."""
    from detection.data.synthetic import generate_dataset

    data = out / "data"
    paths = {split: data / "annotations" / f"{split}.json" for split in SPLITS}
    if (data / ".complete").exists():
        return paths
    paths = generate_dataset(data, seed=recipe["seed"], **recipe["synthetic"])
    (data / ".complete").write_text("")  # written last: a half-written dataset is regenerated
    return paths


def data_is_ready(out: Path) -> bool:
    """True when OUT/data holds a complete generated dataset."""
    return (out / "data" / ".complete").exists()


def train(out: Path, recipe: dict[str, Any], data: dict[str, Path], progress: bool) -> Path:
    """Train in-process with Lightning, resuming from last.ckpt; return the best checkpoint."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from detection.data.datamodule import CocoDataModule
    from detection.lightning_module import DetectionModule
    from detection.training_logs import quiet_dependencies, training_callbacks, training_loggers

    checkpoints = out / "checkpoints"
    images = out / "data" / "images"
    quiet_dependencies()
    L.seed_everything(recipe["seed"], verbose=False)
    datamodule = CocoDataModule(
        **{f"{split}_annotations": str(data[split]) for split in SPLITS},
        **{f"{split}_images": str(images) for split in SPLITS},
        **recipe["data"],
    )
    module = DetectionModule(
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        category_ids=datamodule.category_ids,
        **recipe["model"],
    )
    checkpoint = ModelCheckpoint(
        dirpath=checkpoints,
        filename="best-epoch{epoch:03d}-step{step:06d}",
        monitor="val/mAP",
        mode="max",
        save_last=True,
        auto_insert_metric_name=False,
    )
    trainer = L.Trainer(
        default_root_dir=out,
        devices=1,
        callbacks=[checkpoint, *training_callbacks()],
        logger=training_loggers(out, name="logs"),
        enable_progress_bar=progress,
        **recipe["trainer"],
    )
    last = checkpoints / "last.ckpt"
    with warnings.catch_warnings():
        # On 2 cores the demo loads its small images in the main process on purpose.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.exists() else None)
    best = Path(checkpoint.best_model_path or last)
    if not best.is_file():  # a resumed run remembers a best checkpoint that was deleted since
        best = last
    if not best.is_file():
        raise DetectionError(f"training wrote no checkpoint into {checkpoints}")
    finished = {
        "best": best.name,
        "best_val_mAP": _float(checkpoint.best_model_score),
        "global_step": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
    }
    (checkpoints / "training.json").write_text(json.dumps(finished, indent=2) + "\n")
    return best


def finished_training(out: Path) -> dict[str, Any] | None:
    """What training.json recorded when a previous run's training ended, else None."""
    path = out / "checkpoints" / "training.json"
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    return info if (out / "checkpoints" / info["best"]).is_file() else None


def _float(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


def evaluate_test(
    checkpoint: Path,
    gt_path: Path,
    images: Path,
    report_dir: Path,
    device: str,
    batch_size: int,
    thresholds: list[str] | None = None,
) -> tuple[Any, Any, list[dict[str, Any]]]:
    """Score the checkpoint on the test split with its calibrated thresholds; write metrics + plots.

    Returns (Evaluation, Detector, ground-truth images in id order).
    """
    from detection.evaluation.checkpoint_eval import evaluate_checkpoint
    from detection.evaluation.plots import save_plots
    from detection.evaluation.report import write_metrics_json
    from detection.inference.predictor import Detector

    evaluation = evaluate_checkpoint(
        checkpoint, gt_path, images, thresholds=thresholds, device=device, batch_size=batch_size
    )
    write_metrics_json(evaluation.report, report_dir / "metrics.json")
    save_plots(evaluation.curves, evaluation.report, report_dir)
    gt_images = sorted(json.loads(gt_path.read_text())["images"], key=lambda im: im["id"])
    detector = Detector.from_checkpoint(checkpoint, device=device, thresholds=thresholds)
    return evaluation, detector, gt_images


def inspect_test(
    out: Path, checkpoint: Path, detector: Any, recipe: dict[str, Any], device: str, progress: bool
) -> dict[str, Any]:
    """Run the batch inspection job over the test images (resumes a partial job)."""
    from detection.inference.job import InspectConfig, run_inspect

    settings = {"batch_size": 8, "workers": 0, "save_images": True, **recipe["inspect"]}
    config = InspectConfig(
        checkpoint=str(checkpoint),
        inputs=[str(out / "data" / "images" / "test")],
        output=str(out / "inspection"),
        device=device,
        progress=progress,
        **settings,
    )
    return run_inspect(config, detector=detector)


def draw_examples(
    report_dir: Path,
    gt_path: Path,
    images: Path,
    gt_images: list[dict[str, Any]],
    detector: Any,
    count: int,
) -> list[Path]:
    """Side-by-side PNGs of a few test images: ground truth left, failing detections right."""
    from detection.images import read_image
    from detection.inference.draw import draw_boxes, save_image

    if count <= 0 or not gt_images:
        return []
    gt = json.loads(gt_path.read_text())
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


# ----------------------------------------------------------------------------------- report


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


# ----------------------------------------------------------------------------------- demo


def run_demo(
    out_dir: str | Path,
    recipe: dict[str, Any],
    *,
    device: str = "cpu",
    progress: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Run (or resume) the whole demo into `out_dir` with a recipe from `load_recipe`.

    Returns the key figures (also in OUT/report/summary.json).
    """
    out = Path(out_dir)
    _claim(out, recipe)
    timings = Timings(out / "timings.json")
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)

    if data_is_ready(out):
        log(f"[1/5] data: reusing {out / 'data'}")
        timings.reused("data")
        data = make_data(out, recipe)
    else:
        log(
            f"[1/5] data: generating {recipe['synthetic'].get('num_images')} images -> {out / 'data'}"
        )
        with timings.stage("data"):
            data = make_data(out, recipe)

    training = finished_training(out)
    if training is not None:
        best = out / "checkpoints" / training["best"]
        log(f"[2/5] train: reusing finished training, best checkpoint {best}")
        timings.reused("train")
    else:
        resuming = (out / "checkpoints" / "last.ckpt").exists()
        log(f"[2/5] train: {describe_training(recipe, device)}")
        if resuming:
            log(f"      resuming from {out / 'checkpoints' / 'last.ckpt'}")
        with timings.stage("train"):
            best = train(out, recipe, data, progress)
        training = finished_training(out) or {}

    log(f"[3/5] evaluate: {best.name} on the test split")
    with timings.stage("evaluate"):
        evaluation, detector, gt_images = evaluate_test(
            best,
            data["test"],
            out / "data" / "images",
            report_dir,
            device,
            int(recipe["data"].get("eval_batch_size") or recipe["data"].get("batch_size", 2)),
            recipe["inspect"].get("thresholds"),
        )

    log(f"[4/5] inspect: test images -> {out / 'inspection'}")
    with timings.stage("inspect"):
        inspection = inspect_test(out, best, detector, recipe, device, progress)

    log(f"[5/5] report -> {report_dir}")
    with timings.stage("report"):
        examples = draw_examples(
            report_dir,
            data["test"],
            out / "data" / "images",
            gt_images,
            detector,
            int(recipe["report"].get("annotated_images", 6)),
        )
    images = {split: len(json.loads(path.read_text())["images"]) for split, path in data.items()}
    figures = key_figures(recipe, device, images, evaluation.report, inspection, timings, training)
    write_summary(out, figures, evaluation.report, examples)
    (report_dir / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
