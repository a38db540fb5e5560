"""The `detection` command: LightningCLI for fit/validate/test plus extra subcommands."""

from __future__ import annotations

import importlib
import os
import sys

from detection.errors import DetectionError

# Extra subcommands: each module exposes `main(argv: list[str]) -> int`.
EXTRA_COMMANDS = {
    "evaluate": "detection.commands.evaluate",
    "inspect": "detection.commands.inspect",
    "export": "detection.commands.export",
    "data": "detection.commands.data",
    "demo": "detection.commands.demo",
}
USAGE_EXTRA = "\n".join(f"  detection {name} --help" for name in EXTRA_COMMANDS)


def run_lightning(argv: list[str] | None) -> None:
    """fit / validate / test / predict through LightningCLI."""
    # Imported here so that `detection data ...` and friends start without loading Lightning.
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

    from detection.data.datamodule import CocoDataModule
    from detection.lightning_module import DetectionModule
    from detection.training_logs import PRCurveImages, default_logger, quiet_dependencies

    quiet_dependencies()

    class DetectionCLI(LightningCLI):
        """LightningCLI with the class list linked from data to model, and checkpoints forced."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            for key in ("num_classes", "class_names", "category_ids"):
                parser.link_arguments(f"data.{key}", f"model.{key}", apply_on="instantiate")
            # Always keep the best checkpoint by val/mAP and the last one; set as --checkpoint.*.
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults(
                {
                    "checkpoint.monitor": "val/mAP",
                    "checkpoint.mode": "max",
                    "checkpoint.save_last": True,
                    "checkpoint.filename": "best-epoch{epoch:03d}-step{step:06d}",
                    "checkpoint.auto_insert_metric_name": False,
                }
            )

        def _instantiate_trainer(self, config: dict, callbacks: list) -> L.Trainer:
            # TensorBoard + CSV in the run folder unless the config names a logger (or false).
            config["logger"] = default_logger(config)
            return super()._instantiate_trainer(config, [*callbacks, PRCurveImages()])

    DetectionCLI(
        DetectionModule,
        CocoDataModule,
        args=argv,
        trainer_defaults={"callbacks": [LearningRateMonitor(logging_interval="step")]},
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"epilog": f"Other commands:\n{USAGE_EXTRA}"},
    )


def one_line(err: BaseException) -> str:
    """The last line of an error: torch re-raises worker errors with the traceback as text."""
    line = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    prefix, sep, rest = line.partition(": ")
    return rest if sep and prefix.startswith("detection.errors.") else line


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `detection` console script."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        if words and words[0] in EXTRA_COMMANDS:
            module = importlib.import_module(EXTRA_COMMANDS[words[0]])
            return int(module.main(words[1:]) or 0)
        # LightningCLI reads sys.argv itself when given None, and warns when given both.
        run_lightning(argv)
    except DetectionError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
