"""The `detection` command: LightningCLI for fit/validate/test plus extra subcommands."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from detection.core.errors import DetectionError, WeightsError, first_line

# Extra subcommands: each module exposes `main(argv: list[str]) -> int`.
EXTRA_COMMANDS = {
    "evaluate": "detection.commands.evaluate",
    "inspect": "detection.commands.inspect",
    "export": "detection.commands.export",
    "data": "detection.commands.data",
    "demo": "detection.commands.demo",
    "review": "detection.commands.review",
    "report": "detection.commands.report",
}
USAGE_EXTRA = "\n".join(f"  detection {name} --help" for name in EXTRA_COMMANDS)
# --ckpt_path values Lightning resolves itself rather than as a file path.
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def run_lightning(argv: list[str] | None) -> int:
    """fit / validate / test / predict through LightningCLI; returns the exit status."""
    # Imported here so that `detection data ...` and friends start without loading Lightning.
    import warnings

    import lightning as L
    import yaml
    from jsonargparse import get_loader
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from detection.commands.common import EXIT_INTERRUPTED, EXIT_USAGE
    from detection.data.datamodule import CocoDataModule
    from detection.training.failure_checkpoint import FailureCheckpoint
    from detection.training.flat_names import grouped_config, grouped_words, moved_note
    from detection.training.logs import quiet_dependencies
    from detection.training.module import DetectionModule
    from detection.training.trainer_setup import CHECKPOINT_DEFAULTS, trainer_arguments

    quiet_dependencies()

    class DetectionParser(LightningArgumentParser):
        """LightningCLI's parser, reading the flat model names of before issue 20 (``model.lr``)
        as their grouped ones (``model.optimization.lr``, see `detection.training.flat_names`):
        on the command line and in config files with a note, in the hyper-parameters of an
        older checkpoint Lightning reads for --ckpt_path with a DeprecationWarning."""

        def parse_args(self, args: Any = None, *rest: Any, **kwargs: Any) -> Any:
            words, moved = grouped_words(list(sys.argv[1:] if args is None else args))
            if moved:
                print(moved_note("command line", moved, prefix="--model."), file=sys.stderr)
            return super().parse_args(words, *rest, **kwargs)

        def parse_string(self, content: str, path: Any = "", *rest: Any, **kwargs: Any) -> Any:
            try:
                loaded = get_loader(self.parser_mode)(content)
            except Exception:  # noqa: BLE001 - jsonargparse reports bad content itself
                loaded = None
            config, moved = grouped_config(loaded, str(path) or None)
            if moved:
                print(moved_note(str(path) or "config", moved), file=sys.stderr)
                content = yaml.safe_dump(config, sort_keys=False)
            return super().parse_string(content, path, *rest, **kwargs)

        def parse_object(self, obj: Any, *rest: Any, **kwargs: Any) -> Any:
            obj, moved = grouped_config(obj)
            if moved:
                names = ", ".join(moved)
                warnings.warn(
                    f"flat model settings {names} are deprecated: read into their groups",
                    DeprecationWarning,
                    stacklevel=2,
                )
            return super().parse_object(obj, *rest, **kwargs)

    class DetectionCLI(LightningCLI):
        """LightningCLI with the class list linked from data to model, and checkpoints forced."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            for key in ("num_classes", "class_names", "category_ids"):
                parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")
            # Always keep the best checkpoint by val/mAP and the last one; set as --checkpoint.*.
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({f"checkpoint.{k}": v for k, v in CHECKPOINT_DEFAULTS.items()})

        def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
            section = self.config_init.get(str(self.subcommand), self.config_init)
            config = {**section.get("trainer", {}), **kwargs}
            return super().instantiate_trainer(**trainer_arguments(config, failure))

        def _check_ckpt_path(self) -> None:
            path = self.config_init[self.subcommand].get("ckpt_path")
            if path is not None:
                check_ckpt_path(str(path), self.model, training=self.subcommand == "fit")

        def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
            super().parse_arguments(parser, args)
            # Lightning >= 2.5 loads --ckpt_path's hyper-parameters into the config right after
            # this, before any hook: check the file first, and keep the settings the user gave.
            subcommand = self.config.get("subcommand")
            path = self.config[subcommand].get("ckpt_path") if subcommand else None
            self.given_model_settings = None
            if path is not None:
                check_ckpt_path(str(path))
                self.given_model_settings = (str(path), self.config[subcommand].model.as_dict())

        def settle_checkpoint_settings(self) -> None:
            """After Lightning read the checkpoint's settings: evaluation ones given win back,
            the others get a note."""
            if self.given_model_settings is None or not self.subcommand:
                return
            path, given = self.given_model_settings
            used = self.config[self.subcommand].model.as_dict()
            kept, notes = checkpoint_settings(given, used, path)
            for key, value in kept.items():
                self.config[f"{self.subcommand}.model.{key}"] = value
            for line in notes:
                print(line, file=sys.stderr)

        before_fit = before_validate = before_test = before_predict = _check_ckpt_path

        def before_instantiate_classes(self) -> None:
            self.settle_checkpoint_settings()
            check_run_options(self.config[self.subcommand] if self.subcommand else self.config)

    failure = FailureCheckpoint()
    try:
        DetectionCLI(
            DetectionModule,
            CocoDataModule,
            parser_class=DetectionParser,
            args=argv,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={"epilog": f"Other commands:\n{USAGE_EXTRA}"},
        )
    except SystemExit:
        if failure.stopped_by is None:  # --help, or a usage error jsonargparse printed
            raise
        print(f"error: {failure.stopped_by}{failure.resume_hint()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except DetectionError as err:
        print(f"error: {one_line(err)}{failure.resume_hint()}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, MisconfigurationException) as err:
        # A run folder the disk refuses (read-only, full), or a Trainer option Lightning refuses.
        where = f"{err.filename}: " if isinstance(err, OSError) and err.filename else ""
        what = err.strerror if isinstance(err, OSError) and err.strerror else first_line(err)
        print(f"error: {where}{what}{failure.resume_hint()}", file=sys.stderr)
        return EXIT_USAGE
    return 0


# Trainer numbers with a rule Lightning checks only when the Trainer is built (a traceback).
_TRAINER_LIMITS = {"max_epochs": -1, "max_steps": -1, "min_epochs": 0, "min_steps": 0}


def check_run_options(config: Any) -> None:
    """Refuse, in one line and before anything is built or written, options no run can use:
    a negative epoch or step limit, an empty size list, a run folder that cannot be written."""
    from detection.core.errors import InvalidInputError
    from detection.core.run_folder import check_writable_folder

    trainer, model = config.get("trainer") or {}, config.get("model") or {}
    for key, least in _TRAINER_LIMITS.items():
        value = trainer.get(key)
        if value is not None and (isinstance(value, bool) or value < least):
            rule = "-1 (no limit) or 0 or more" if least < 0 else "0 or more"
            raise InvalidInputError(None, f"must be {rule}, got {value!r}", field=f"trainer.{key}")
    if isinstance(model.get("min_size"), list | tuple) and not model.get("min_size"):
        raise InvalidInputError(None, "must be a size or a list of sizes, got []", field="min_size")
    if trainer.get("default_root_dir"):
        check_writable_folder(Path(trainer.get("default_root_dir")))


def check_config_files(words: list[str]) -> None:
    """Every --config (-c) file must be a regular file of well-formed YAML: jsonargparse would
    block on a FIFO, and reports bad YAML in several lines. A value that names no file is left
    to jsonargparse (it may be YAML text itself)."""
    from detection.core.files import read_yaml

    values = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--config", "-c")]
    values += [w.split("=", 1)[1] for w in words if w.startswith("--config=")]
    for value in values:
        if os.path.lexists(value):
            read_yaml(value)


def check_ckpt_path(path: str, module: Any = None, *, training: bool = False) -> None:
    """Refuse a --ckpt_path that cannot work, in one line, before Lightning tries it: not a
    detection checkpoint (an exported model, say), a model that cannot decide (the loader's
    checks), no training state to resume, or another model than `module`'s."""
    from detection.inference.model_files import is_checkpoint, model_format, read_model_meta
    from detection.models.checkpoint import open_checkpoint

    if path in LIGHTNING_CKPT_NAMES or "://" in path:
        return  # Lightning resolves these names and remote paths itself
    if not is_checkpoint(path):
        raise WeightsError(
            f"{path}: an exported {model_format(path).name} model; --ckpt_path takes a "
            "training checkpoint (.ckpt)"
        )
    meta = read_model_meta(path)
    _, ckpt = open_checkpoint(path, mmap=True)
    if module is None:
        return
    if training and "optimizer_states" not in ckpt:
        raise WeightsError(
            f"{path}: holds only weights (saved with save_weights_only), no training state to "
            "resume; start from its weights with --model.weights instead"
        )
    ours = (meta.model_name, meta.class_names)
    theirs = (module.meta.model_name, module.meta.class_names)
    if ours != theirs:
        raise WeightsError(
            f"{path}: trained as {ours[0]} on classes {ours[1]}, but this run builds "
            f"{theirs[0]} on classes {theirs[1]}"
        )


def checkpoint_settings(
    given: dict[str, Any], used: dict[str, Any], path: str
) -> tuple[dict[str, Any], list[str]]:
    """Settle the model settings of a run from a checkpoint (--ckpt_path).

    Lightning rebuilds the model with the checkpoint's hyper-parameters, whatever the config file
    or command line say. Of the settings the user gave (those not at their default), the
    evaluation ones win back (they shape reports, not weights): returned as {key: value}, a
    group's field as ``evaluation.score_threshold``. The others stay the checkpoint's, each
    with a one-line note instead of silence.
    """
    import dataclasses
    import inspect

    from detection.training.module import DetectionModule

    # The typed groups (batched, optimization, evaluation) compare field by field, their
    # defaults as the dicts the config holds.
    parameters = inspect.signature(DetectionModule.__init__).parameters
    groups = {name for name, p in parameters.items() if dataclasses.is_dataclass(p.default)}

    def by_field(settings: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in settings.items():
            if key in groups and isinstance(value, dict):
                out.update({f"{key}.{field}": item for field, item in value.items()})
            else:
                out[key] = value
        return out

    defaults = by_field({
        name: dataclasses.asdict(p.default) if name in groups else p.default
        for name, p in parameters.items()
    })  # fmt: skip
    given, used = by_field(given), by_field(used)
    changed = [
        key
        for key, value in given.items()
        if key in used
        and value != used[key]
        and value != defaults.get(key, inspect.Parameter.empty)
    ]
    kept = {key: given[key] for key in changed if key.startswith("evaluation.")}
    notes = [
        f"note: --model.{key} {given[key]!r} is ignored: {path} was trained with {used[key]!r}, "
        "and Lightning rebuilds the model with it"
        for key in changed
        if key not in kept
    ]
    return kept, notes


def one_line(err: BaseException) -> str:
    """The last line of an error: torch re-raises worker errors with the traceback as text."""
    line = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    prefix, sep, rest = line.partition(": ")
    return rest if sep and prefix.startswith("detection.core.errors.") else line


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `detection` console script."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        if words and words[0] in EXTRA_COMMANDS:
            module = importlib.import_module(EXTRA_COMMANDS[words[0]])
            return int(module.main(words[1:]) or 0)
        check_config_files(words)
        # LightningCLI reads sys.argv itself when given None, and warns when given both.
        return run_lightning(argv)
    except DetectionError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
