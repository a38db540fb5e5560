"""The built-in demo: synthetic defect data -> training -> test evaluation -> inspection -> report.

Every stage writes into one folder and is skipped on a re-run when its output is complete:

    OUT/recipe.yaml       the settings actually used (the packaged recipe plus command-line overrides)
    OUT/data/             generated COCO data: annotations/{train,val,test}.json, images/
    OUT/checkpoints/      best-*.ckpt (by val/mAP), last.ckpt, training.json once training ended
    OUT/logs/             TensorBoard events and CSV metrics (`tensorboard --logdir OUT/logs`)
    OUT/inspection/       the batch inspection job over the test images (JSONL, summary.json, failed/)
    OUT/inspection/report/index.html  the HTML inspection report of that job (detection report)
    OUT/report/           metrics.json, plots, examples/, README.md, summary.json
    OUT/timings.json      wall and CPU seconds per stage
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from detection.core.errors import DetectionError
from detection.core.run_folder import claim_folder
from detection.demo.recipe import describe_training, load_recipe
from detection.demo.report import Timings, draw_examples, key_figures, write_summary

__all__ = ["load_recipe", "make_data", "run_demo"]

SPLITS = ("train", "val", "test")


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


def train(out: Path, recipe: dict[str, Any], data: dict[str, Path], progress: bool) -> Path:
    """Train in-process with the Trainer set-up of `detection fit`, resuming from last.ckpt;
    return the best checkpoint."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from detection.data.datamodule import CocoDataModule
    from detection.training.failure_checkpoint import FailureCheckpoint
    from detection.training.logs import quiet_dependencies, training_loggers
    from detection.training.module import DetectionModule
    from detection.training.trainer_setup import CHECKPOINT_DEFAULTS, trainer_arguments

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
    checkpoint = ModelCheckpoint(dirpath=checkpoints, **CHECKPOINT_DEFAULTS)
    settings = {
        "default_root_dir": out,
        "devices": 1,
        "callbacks": [checkpoint],
        "logger": training_loggers(out, name="logs"),
        "enable_progress_bar": progress,
        **recipe["trainer"],
    }
    trainer = L.Trainer(**trainer_arguments(settings, FailureCheckpoint()))
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
    score = checkpoint.best_model_score
    finished = {
        "best": best.name,
        "best_val_mAP": None if score is None else round(float(score), 4),
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
    from detection.evaluation.plots import save_plots
    from detection.evaluation.report import write_metrics_json
    from detection.inspect.job import InspectConfig, run_inspect
    from detection.training.checkpoint_eval import evaluate_checkpoint

    out = Path(out_dir)
    advice = "use another --out or delete that folder"
    claim_folder(out / "recipe.yaml", recipe, what="a demo run", advice=advice, ignore=["source"])
    timings = Timings(out / "timings.json")
    report_dir = out / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    images = out / "data" / "images"
    thresholds = recipe["inspect"].get("thresholds")

    if (out / "data" / ".complete").exists():
        log(f"[1/5] data: reusing {out / 'data'}")
        timings.reused("data")
        data = make_data(out, recipe)
    else:
        count = recipe["synthetic"].get("num_images")
        log(f"[1/5] data: generating {count} images -> {out / 'data'}")
        with timings.stage("data"):
            data = make_data(out, recipe)

    training = finished_training(out)
    if training is not None:
        best = out / "checkpoints" / training["best"]
        log(f"[2/5] train: reusing finished training, best checkpoint {best}")
        timings.reused("train")
    else:
        log(f"[2/5] train: {describe_training(recipe, device)}")
        if (out / "checkpoints" / "last.ckpt").exists():
            log(f"      resuming from {out / 'checkpoints' / 'last.ckpt'}")
        with timings.stage("train"):
            best = train(out, recipe, data, progress)
        training = finished_training(out) or {}

    log(f"[3/5] evaluate: {best.name} on the test split")
    with timings.stage("evaluate"):
        batch_size = recipe["data"].get("eval_batch_size") or recipe["data"].get("batch_size", 2)
        evaluation = evaluate_checkpoint(
            best,
            data["test"],
            images,
            thresholds=thresholds,
            device=device,
            batch_size=int(batch_size),
        )
        write_metrics_json(evaluation.report, report_dir / "metrics.json")
        save_plots(evaluation.curves, evaluation.report, report_dir)

    log(f"[4/5] inspect: test images -> {out / 'inspection'}")
    with timings.stage("inspect"):
        settings = {"batch_size": 8, "workers": 0, "save_images": True, **recipe["inspect"]}
        config = InspectConfig(
            checkpoint=str(best),
            inputs=[str(images / "test")],
            output=str(out / "inspection"),
            device=device,
            progress=progress,
            **settings,
        )
        detector = config.make_detector()
        inspection = run_inspect(config, detector=detector)

    log(f"[5/5] report -> {report_dir}")
    with timings.stage("report"):
        count = int(recipe["report"].get("annotated_images", 6))
        examples = draw_examples(report_dir, data["test"], images, detector, count)
        # The HTML inspection report (detection report) of the job, with the test labels.
        from detection.report import write_report

        write_report(out / "inspection", gt=data["test"], images=images, progress=progress)
    sizes = {split: len(json.loads(path.read_text())["images"]) for split, path in data.items()}
    figures = key_figures(recipe, device, sizes, evaluation.report, inspection, timings, training)
    write_summary(out, figures, evaluation.report, examples)
    (report_dir / "summary.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures
