"""The demo's recipe: the packaged settings for a device, plus command-line overrides."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from detection.core.errors import DetectionError, InvalidInputError
from detection.core.files import read_yaml
from detection.core.thresholds import Thresholds
from detection.training.flat_names import model_setting

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
    if not path.exists():
        raise DetectionError(f"{path}: demo recipe not found; pass one with --config")
    recipe = read_yaml(path) or {}  # a FIFO, bad UTF-8 or bad YAML: one line naming the file
    if not isinstance(recipe, dict):
        raise InvalidInputError(path, f"must be a mapping of sections {list(SECTIONS)}")
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
    _check_recipe(recipe, path)
    return recipe


def _check_recipe(recipe: dict[str, Any], path: Path) -> None:
    """Refuse, before anything is written, a dataset or a training no demo can finish."""
    from detection.data.synthetic import DEFAULT_SPLITS, MIN_DEFECT_SIZE, split_counts

    synthetic, trainer = recipe["synthetic"], recipe["trainer"]
    images, size = synthetic.get("num_images", 200), synthetic.get("image_size", 256)
    sides = size if isinstance(size, list | tuple) else [size]
    problems = {
        "synthetic.num_images": not isinstance(images, int)
        or min(split_counts(max(images, 0), DEFAULT_SPLITS).values()) < 1,
        "synthetic.image_size": not all(isinstance(v, int) and v >= MIN_DEFECT_SIZE for v in sides),
        "trainer.max_steps": trainer.get("max_steps", -1) not in (-1, None)
        and trainer["max_steps"] < 1,
        "trainer.max_epochs": trainer.get("max_epochs", -1) not in (-1, None)
        and trainer["max_epochs"] < 1,
    }
    rules = {
        "synthetic.num_images": "enough images for one in each of train, val and test (--images)",
        "synthetic.image_size": f"a side of at least {MIN_DEFECT_SIZE} pixels (--size)",
        "trainer.max_steps": "1 or more (--steps), or -1",
        "trainer.max_epochs": "1 or more (--epochs), or -1",
    }
    for field, bad in problems.items():
        if bad:
            section, key = field.split(".")
            raise InvalidInputError(
                path, f"must be {rules[field]}, got {recipe[section].get(key)!r}", field=field
            )


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
        f"{model_setting(model, 'optimizer', 'sgd')} lr {model_setting(model, 'lr')}, "
        f"batch {data.get('batch_size')}, "
        f"{length}, on {device}{threads}, precision {trainer.get('precision', '32')}"
    )
