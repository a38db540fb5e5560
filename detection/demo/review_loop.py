"""The review loop on generated data, measured: train, inspect a new lot, send the failed,
uncertain and audit images to a simulated reviewer who answers from the ground truth, import the
corrections, merge them into the training json, fine-tune, and compare on the held-out test split.

Fine-tuning runs the same number of steps twice from the first checkpoint: on the merged json
(with the reviewed lot images) and, as a control, on the original training json alone, so the
gain of the corrections is not confused with the gain of more steps. The test split is small:
the escape and false-reject counts carry Wilson 95 % intervals, and one seed is one draw.

Everything is written into one folder:

    OUT/review_loop_settings.json  the arguments; a re-run with other ones is refused
    OUT/data/             generated COCO data: annotations/{train,lot,val,test}.json, images/
    OUT/round0/           the first training (checkpoints/, logs/, recipe.yaml, test figures)
    OUT/lot.txt, OUT/inspect/   the lot's image list and the inspect job over it
    OUT/export/           the review export (Label Studio tasks, CVAT XML, manifest)
    OUT/reviewer_export.json    the simulated reviewer's answers (a Label Studio full-JSON export)
    OUT/import/           diff, corrected.json, merged.json, review report
    OUT/round1/, OUT/round1_control/   the fine-tunes with and without the review
    OUT/review_loop.json, OUT/review_loop.md   the figures before and after
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from detection.core.coco_format import read_coco
from detection.core.errors import ConfigError
from detection.core.run_folder import claim_folder, output_folder, write_atomic
from detection.demo.loop_summary import figures, markdown
from detection.demo.pipeline import finished_training, train
from detection.demo.recipe import load_recipe
from detection.demo.simulated_reviewer import ground_truth, simulated_answers
from detection.review.importing import MERGED_FILE
from detection.review.manifest import MANIFEST_FILE
from detection.review.report import REPORT_JSON

SPLITS = {"train": 0.3, "lot": 0.4, "val": 0.15, "test": 0.15}
MAX_DEFECTS_PER_IMAGE = 6
# Validate (and keep the best checkpoint) every this many fine-tune steps in both runs: by
# epoch, the merged json's longer epochs would give the reviewed run fewer chances than the control.
VALIDATE_EVERY = 30
SETTINGS_FILE = "review_loop_settings.json"
RESULT_JSON = "review_loop.json"
RESULT_MD = "review_loop.md"
ROUNDS = ("round0", "round1", "round1_control")
STAGES = 8


def finetune_recipe(recipe: dict[str, Any], weights: Path, steps: int) -> dict[str, Any]:
    """The first training's recipe turned into a fine-tune of `weights` for `steps` steps.

    The one place the loop edits recipe keys: both fine-tunes (reviewed and control) use it.
    """
    tune = copy.deepcopy(recipe)
    tune["model"]["weights"] = str(weights)
    # The weights are trained: no warm-up from a tiny lr.
    tune["model"].setdefault("optimization", {})["warmup_iters"] = 0
    tune["trainer"].update(
        max_epochs=1000,  # max_steps ends the run, whatever the json's length
        max_steps=steps,
        check_val_every_n_epoch=None,
        val_check_interval=min(VALIDATE_EVERY, steps),  # a short run still validates once
    )
    return tune


def _train_round(
    folder: Path,
    data: Path,
    recipe: dict[str, Any],
    splits: dict[str, Path],
    progress: bool,
) -> tuple[Path, dict[str, Any], bool]:
    """(best checkpoint, training.json, reused) of a training round in `folder`: a finished one
    is reused, an interrupted one resumes from its last.ckpt (see pipeline.train)."""
    advice = "use another --out or delete that folder"
    claim_folder(folder / "recipe.yaml", recipe, what="a training round", advice=advice,
                 ignore=["source"])  # fmt: skip
    link = folder / "data"
    if not os.path.lexists(link):
        # train() reads FOLDER/data/images; relative, so that the run folder can be moved
        link.symlink_to(os.path.relpath(data, folder), target_is_directory=True)
    finished = finished_training(folder)
    if finished is not None:
        return folder / "checkpoints" / finished["best"], finished, True
    best = train(folder, recipe, splits, progress=progress)
    return best, finished_training(folder) or {}, False


def check_arguments(
    images: int, epochs: int, finetune_steps: int, audit_fraction: float, image_size: int
) -> None:
    """Refuse, before anything is written, arguments no loop can finish.

    Raises:
        ConfigError: naming the argument.
    """
    from detection.data.synthetic import MIN_DEFECT_SIZE, split_counts

    values = {"images": images, "epochs": epochs, "finetune_steps": finetune_steps,
              "audit_fraction": audit_fraction, "image_size": image_size}  # fmt: skip
    problems = {
        "images": (images < 1 or min(split_counts(images, SPLITS).values()) < 1,
                   "enough for one image in each of train, lot, val and test"),
        "epochs": (epochs < 1, "1 or more"),
        "finetune_steps": (finetune_steps < 1, "1 or more"),
        "audit_fraction": (not 0.0 <= audit_fraction <= 1.0, "in 0..1"),
        "image_size": (image_size < MIN_DEFECT_SIZE, f"at least {MIN_DEFECT_SIZE} pixels"),
    }  # fmt: skip
    for name, (bad, rule) in problems.items():
        if bad:
            raise ConfigError(f"review loop: {name} must be {rule}, got {values[name]!r}")


def _make_data(data: Path, images: int, image_size: int, seed: int) -> dict[str, Path]:
    from detection.data.synthetic import generate_dataset

    marker = data / ".complete"
    if marker.exists():
        return {split: data / "annotations" / f"{split}.json" for split in SPLITS}
    splits = generate_dataset(
        data, num_images=images, image_size=image_size, seed=seed, splits=SPLITS,
        max_defects_per_image=MAX_DEFECTS_PER_IMAGE,
    )  # fmt: skip
    marker.write_text("")  # last: a half-written dataset is generated again
    return splits


def _inspect_lot(out: Path, checkpoint: Path, lot: Path, images: Path, progress: bool) -> bool:
    """Inspect the lot's images into OUT/inspect; True when a complete job was already there."""
    from detection.inspect.config import InspectConfig
    from detection.inspect.job import run_inspect
    from detection.inspect.outputs import SUMMARY_FILE

    names = [i["file_name"] for i in read_coco(lot)["images"]]
    summary = out / "inspect" / SUMMARY_FILE
    if summary.exists():
        done = json.loads(summary.read_text(encoding="utf-8"))
        if done.get("complete") and done.get("images") == len(names):
            return True
    listing = out / "lot.txt"
    write_atomic(listing, "".join(str((images / name).resolve()) + "\n" for name in names))
    config = InspectConfig(checkpoint=str(checkpoint), inputs=[str(listing)],
                           output=str(out / "inspect"), workers=0, device="cpu",
                           progress=progress)  # fmt: skip
    run_inspect(config)  # resumes a started job by itself
    return False


def _review(
    out: Path, splits: dict[str, Path], images: Path, seed: int, audit_fraction: float, size: int
) -> tuple[int, dict[str, Any], bool]:
    """Export the lot for review, answer it from the ground truth and import the answers:
    (exported images, the import's report, reused)."""
    from detection.review.export import ExportOptions, export_review
    from detection.review.importing import ImportOptions, import_review
    from detection.review.manifest import read_manifest

    export, imported = out / "export", out / "import"
    if (export / MANIFEST_FILE).exists():
        manifest = read_manifest(export)
    else:
        options = ExportOptions(audit_fraction=audit_fraction, seed=seed,
                                document_root=str(images.resolve()))  # fmt: skip
        manifest = export_review(out / "inspect", export, options)
    report_path = imported / REPORT_JSON
    if report_path.exists() and (imported / MERGED_FILE).exists():  # the report is written last
        return len(manifest.images), json.loads(report_path.read_text(encoding="utf-8")), True
    tasks = json.loads((export / "label_studio_tasks.json").read_text(encoding="utf-8"))
    truth = ground_truth(splits["lot"], images.resolve())
    answered = out / "reviewer_export.json"
    write_atomic(answered, json.dumps(simulated_answers(tasks, truth, size, size)))
    options = ImportOptions(images_root=str(images.resolve()), base=str(splits["train"]))
    return len(manifest.images), import_review(answered, export, imported, options), False


def run_review_loop(
    out: str | Path,
    *,
    seed: int = 0,
    images: int = 400,
    epochs: int = 5,
    finetune_steps: int = 120,
    audit_fraction: float = 0.1,
    image_size: int = 128,
    progress: bool = True,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run (or resume) the review loop into `out` on CPU, with the CPU demo recipe.

    A re-run with the same arguments reuses every finished stage: the generated data, a finished
    training round (an interrupted one resumes from its last.ckpt), a complete inspect job (a
    started one resumes itself), the export, the import, and each round's test figures; only
    `review_loop.json` and `.md` are written again.

    Args:
        out: the folder of the run.
        seed: of data generation, training, the audit sample.
        images: generated images in all (30 % train, 40 % lot, 15 % val, 15 % test).
        epochs: of the first training.
        finetune_steps: of each fine-tune (reviewed and control).
        audit_fraction: the share of the lot's passed images sampled for review.
        image_size: side of the generated images, also the model's input size.
        progress: Lightning's and the inspect job's progress bars.
        log: receives one line per stage.

    Returns:
        The figures, as written to OUT/review_loop.json.

    Raises:
        ConfigError: an argument out of range (before anything is written).
        DetectionError: `out` holds a run with other arguments, or a stage fails (a bad recipe,
            a training that wrote no checkpoint).
        OutputError: `out` cannot be written.
    """
    check_arguments(images, epochs, finetune_steps, audit_fraction, image_size)
    out = output_folder(Path(out)).resolve()
    settings = {"seed": seed, "images": images, "epochs": epochs, "finetune_steps": finetune_steps,
                "audit_fraction": audit_fraction, "image_size": image_size}  # fmt: skip
    claim_folder(out / SETTINGS_FILE, settings, what="a review loop",
                 advice="use another --out or delete that folder")  # fmt: skip

    def stage(number: int, text: str) -> None:
        log(f"[{number}/{STAGES}] {text}")

    data = out / "data"
    reused = (data / ".complete").exists()
    stage(1, f"data: {'reusing' if reused else f'generating {images} images into'} {data}")
    splits = _make_data(data, images, image_size, seed)
    pictures = data / "images"
    recipe = load_recipe("cpu", seed=seed, epochs=epochs, size=image_size)
    base = {k: splits[k] for k in ("train", "val", "test")}

    stage(2, f"train round0: {epochs} epochs on {_count(splits['train'])} images")
    first, trained0, reused = _train_round(out / "round0", data, recipe, base, progress)
    if reused:
        log(f"      reusing finished training, best checkpoint {first}")

    stage(3, f"inspect the lot ({_count(splits['lot'])} images) -> {out / 'inspect'}")
    if _inspect_lot(out, first, splits["lot"], pictures, progress):
        log("      reusing the complete job")

    stage(4, "review: export, simulated reviewer, import and merge")
    exported, review, reused = _review(out, splits, pictures, seed, audit_fraction, image_size)
    log(f"      {'reusing ' if reused else ''}{exported} images reviewed; boxes {review['boxes']}")

    tune = finetune_recipe(recipe, first, finetune_steps)
    merged = {**base, "train": out / "import" / MERGED_FILE}
    stage(5, f"fine-tune round1 on the merged json: {finetune_steps} steps")
    after, trained1, reused = _train_round(out / "round1", data, tune, merged, progress)
    if reused:
        log(f"      reusing finished training, best checkpoint {after}")
    stage(6, f"fine-tune round1_control without the review: {finetune_steps} steps")
    control, trained_c, reused = _train_round(out / "round1_control", data, tune, base, progress)
    if reused:
        log(f"      reusing finished training, best checkpoint {control}")

    stage(7, f"evaluate the three checkpoints on the test split ({_count(splits['test'])} images)")
    test = {
        name: figures(checkpoint, splits["test"], pictures, out / folder)
        for name, checkpoint, folder in (
            ("before", first, "round0"),
            ("after_review", after, "round1"),
            ("control_no_review", control, "round1_control"),
        )
    }
    result = {
        "seed": seed,
        "settings": settings,
        "images": {k: _count(p) for k, p in splits.items()},
        "reviewed": {"exported": exported, "boxes": review["boxes"],
                     "audit_escape_rate": review["audit_escape_rate"],
                     "reject_precision": review["reject_precision"]},
        **test,
        "finetune_steps": finetune_steps,
        "training": {"round0": trained0, "round1": trained1, "round1_control": trained_c},
    }  # fmt: skip
    stage(8, f"report -> {out / RESULT_JSON}, {out / RESULT_MD}")
    write_atomic(out / RESULT_JSON, json.dumps(result, indent=2) + "\n")
    write_atomic(out / RESULT_MD, markdown(result))
    return result


def _count(coco: Path) -> int:
    return len(read_coco(coco)["images"])
