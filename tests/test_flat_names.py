"""DetectionModule's grouped settings (optimization, evaluation) and the flat names of configs
and command lines written before issue 20.

tests/data/old_layout_deeppcb.yaml and old_layout_cpu_quick.yaml are configs/deeppcb.yaml and
configs/cpu_quick.yaml as they were before the groups (flat ``model.lr``...).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import yaml
from cli_cases import error_line, fit_args

from detection.cli import checkpoint_settings, main
from detection.core.errors import InvalidInputError
from detection.training.flat_names import (
    FLAT_NAMES,
    grouped_config,
    grouped_words,
    model_setting,
)
from detection.training.module import DetectionModule
from detection.training.options import EvaluationOptions, OptimizationOptions

DATA = Path(__file__).parent / "data"
OLD_CONFIGS = {"deeppcb": DATA / "old_layout_deeppcb.yaml", "cpu_quick": DATA / "old_layout_cpu_quick.yaml"}  # fmt: skip
TINY = {"model_name": "fasterrcnn_resnet18_fpn", "num_classes": 2, "min_size": 64, "max_size": 64}


def test_every_flat_name_has_one_group() -> None:
    assert set(FLAT_NAMES) == {
        "optimizer", "lr", "momentum", "weight_decay", "scheduler", "milestones",
        "milestones_unit", "gamma", "warmup_iters", "warmup_factor", "max_nonfinite_steps",
        "eval_backend", "area_ranges", "iou_threshold", "score_threshold", "target_recall",
    }  # fmt: skip
    assert {FLAT_NAMES["lr"], FLAT_NAMES["score_threshold"]} == {"optimization", "evaluation"}


@pytest.mark.parametrize("name", sorted(OLD_CONFIGS))
def test_an_old_layout_config_reads_as_the_grouped_one(name: str) -> None:
    old = yaml.safe_load(OLD_CONFIGS[name].read_text())
    new = yaml.safe_load(Path(f"configs/{name}.yaml").read_text())
    grouped, moved = grouped_config(old)
    assert grouped == new
    assert moved and all(key in old["model"] for key in moved)
    assert not any(key in new["model"] for key in FLAT_NAMES)  # the shipped config is grouped
    assert grouped_config(new) == (new, [])


def test_old_config_and_flat_words_print_the_same_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI path: jsonargparse reads the old config and `--model.lr` into the groups, in
    order (the command line overrides the file), with one note per source."""
    printed = {}
    for config, lr in ((OLD_CONFIGS["deeppcb"], "--model.lr=0.05"),
                       (Path("configs/deeppcb.yaml"), "--model.optimization.lr=0.05")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(config), lr, "--print_config"])
        assert exit_info.value.code == 0
        out, err = capsys.readouterr()
        printed[config.name] = (yaml.safe_load(out), [x for x in err.splitlines() if x.startswith("note:")])  # fmt: skip
    (old, old_notes), (new, new_notes) = printed.values()
    assert old == new and new_notes == []
    assert new["model"]["optimization"]["lr"] == 0.05
    assert new["model"]["optimization"]["milestones"] == [24, 32]
    assert new["model"]["evaluation"]["iou_threshold"] == 0.33
    assert len(old_notes) == 2
    assert (
        "command line" in old_notes[0] and "--model.lr -> --model.optimization.lr" in old_notes[0]
    )
    assert old_notes[1].startswith("note: old_layout_deeppcb.yaml: ")
    assert "model.iou_threshold -> model.evaluation.iou_threshold" in old_notes[1]


def test_a_flat_key_beside_its_group_in_a_config_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "twice.yaml"
    config.write_text("model:\n  lr: 0.01\n  optimization:\n    lr: 0.02\n")
    code = main(["fit", "--config", "configs/cpu_quick.yaml", "--config", str(config), "--print_config"])  # fmt: skip
    assert code == 2
    error_line(capsys.readouterr().err, "twice.yaml", "field 'model.lr'", "given twice")


@pytest.mark.parametrize(
    "argument, field",
    [("--model.optimization.lr=-0.01", "lr"), ("--model.evaluation.score_threshold=2", "score_threshold")],
)  # fmt: skip
def test_grouped_numbers_out_of_range_are_one_line_errors(
    data: Path, argument: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As tests/test_bad_inputs_cli.py checks the flat names (`--model.lr=-0.01`)."""
    root = tmp_path / "run"
    assert main(fit_args(data, root, argument)) == 2
    error_line(capsys.readouterr().err, f"field '{field}'")
    assert not root.exists()


def test_flat_words_are_rewritten_and_others_kept() -> None:
    words = ["fit", "--model.lr", "0.01", "--model.score_threshold=0.3", "--model.min_size=64",
             "--data.lr=1", "--model.optimization.gamma=0.5"]  # fmt: skip
    out, moved = grouped_words(words)
    assert out == ["fit", "--model.optimization.lr", "0.01", "--model.evaluation.score_threshold=0.3",
                   "--model.min_size=64", "--data.lr=1", "--model.optimization.gamma=0.5"]  # fmt: skip
    assert moved == ["lr", "score_threshold"]


def test_flat_module_arguments_move_into_their_groups_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match="lr is deprecated: set optimization.lr instead"):
        module = DetectionModule(**TINY, lr=0.01, target_recall=0.8)
    assert module.optimization == OptimizationOptions(lr=0.01)
    assert module.evaluation == EvaluationOptions(target_recall=0.8)
    assert "lr" not in module.hparams and module.hparams.optimization["lr"] == 0.01
    with pytest.raises(
        InvalidInputError, match="field 'lr': given twice: flat and as optimization.lr"
    ):
        DetectionModule(**TINY, lr=0.01, optimization=OptimizationOptions(lr=0.05))
    with pytest.raises(InvalidInputError, match="field 'lr': given twice"):
        DetectionModule(**TINY, lr=0.01, optimization={"lr": 0.01})
    with pytest.raises(TypeError, match="unexpected keyword argument 'lrr'"):
        DetectionModule(**TINY, lrr=0.01)
    with pytest.raises(InvalidInputError, match="field 'optimization'.*'lrr'"):
        DetectionModule(**TINY, optimization={"lrr": 0.01})


@pytest.mark.parametrize(
    "kind, values, message",
    [
        (OptimizationOptions, {"lr": -1.0}, "field 'lr': must be above 0, got -1.0"),
        (OptimizationOptions, {"milestones": [3, -1]}, "field 'milestones': must be 0 or more"),
        (OptimizationOptions, {"optimizer": "adam"}, "field 'optimizer': must be one of ['sgd', 'adamw']"),
        (OptimizationOptions, {"warmup_iters": float("nan")}, "field 'warmup_iters': must be 0 or more"),
        (EvaluationOptions, {"iou_threshold": 0.0}, "field 'iou_threshold': must be in (0, 1]"),
        (EvaluationOptions, {"eval_backend": "coco"}, "field 'eval_backend': must be one of"),
        (EvaluationOptions, {"score_threshold": "high"}, "field 'score_threshold': must be a number"),
    ],
)  # fmt: skip
def test_a_group_refuses_impossible_values(kind: type, values: dict, message: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        kind(**values)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_model_setting_reads_both_layouts() -> None:
    assert model_setting({"optimization": {"lr": 0.1}}, "lr") == 0.1
    assert model_setting({"lr": 0.2}, "lr") == 0.2  # a checkpoint or recipe before the groups
    assert model_setting({"optimization": OptimizationOptions(lr=0.3)}, "lr") == 0.3
    assert model_setting({"optimization": {"gamma": 0.5}}, "lr", "unset") == "unset"
    assert model_setting({"min_size": 64}, "min_size") == 64


def test_a_run_from_a_checkpoint_keeps_given_evaluation_fields_and_notes_the_rest() -> None:
    trained = {"optimization": vars(OptimizationOptions(lr=0.01)),
               "evaluation": vars(EvaluationOptions(score_threshold=0.4)), "min_size": 64}  # fmt: skip
    given = {"optimization": vars(OptimizationOptions(lr=0.001)),
             "evaluation": vars(EvaluationOptions(score_threshold=0.3, iou_threshold=0.7)),
             "min_size": 64}  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept, notes = checkpoint_settings(given, trained, "last.ckpt")
    assert kept == {"evaluation.score_threshold": 0.3, "evaluation.iou_threshold": 0.7}
    assert notes == [
        "note: --model.optimization.lr 0.001 is ignored: last.ckpt was trained with 0.01, "
        "and Lightning rebuilds the model with it"
    ]
