"""The demo's recipe: the packaged settings for a device, plus command-line overrides."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from detection.core.errors import DetectionError
from detection.core.thresholds import Thresholds

# Packaged with the code (configs/demo_*.yaml link here, for users to copy and edit).
RECIPE_DIR = resources.files("detection.demo") / "recipes"
RECIPES = {"cpu": "demo_cpu.yaml", "cuda": "demo_gpu.yaml"}
SECTIONS = ("seed", "synthetic", "model", "data", "trainer", "inspect", "report")


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
