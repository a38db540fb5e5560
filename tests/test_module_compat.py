"""Checkpoints written before the module's options were typed and grouped, and `detection predict`.

tests/data/old_module_hparams.json holds the `hyper_parameters` a checkpoint of main before
issue 20 carried (written by that code): 28 flat arguments, the batched options inside
`model_kwargs` under their old names beside torchvision's arguments, the optimisation and
evaluation settings flat (``lr``, not ``optimization.lr``). The tests build a
checkpoint in that layout around the trained square detector's weights.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from square_model import MODEL_NAME, square_image

from detection.cli import main
from detection.core.errors import InvalidInputError
from detection.models.faster_rcnn import build_model
from detection.training.flat_names import FLAT_NAMES, model_setting
from detection.training.module import DetectionModule
from detection.training.options import BatchedOptions

OLD_HPARAMS = Path(__file__).parent / "data" / "old_module_hparams.json"


def old_layout_checkpoint(square_checkpoint: Path, path: Path) -> tuple[Path, dict]:
    """The square detector's weights under the old layout's hyper-parameters; (path, those)."""
    fixture = json.loads(OLD_HPARAMS.read_text())
    ckpt = torch.load(square_checkpoint, weights_only=True)
    old = {
        "state_dict": ckpt["state_dict"],
        "detection": ckpt["detection"],
        "hyper_parameters": fixture["hyper_parameters"],
        "pytorch-lightning_version": fixture["lightning"],
        "epoch": 0,
        "global_step": 0,
    }
    torch.save(old, path)
    return path, fixture["hyper_parameters"]


def reference_model(square_checkpoint: Path, hparams: dict) -> torch.nn.Module:
    """The model the old checkpoint came from, built as the old code built it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the old option names
        model = build_model(
            MODEL_NAME,
            hparams["num_classes"],
            min_size=hparams["min_size"],
            max_size=hparams["max_size"],
            impl=hparams["impl"],
            **hparams["model_kwargs"],
        )
    state = torch.load(square_checkpoint, weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return model.eval()


def square_images(count: int, seed: int = 5) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = [square_image(rng, 64, 64) for _ in range(count)]
    return [image for image, _ in pairs], [boxes for _, boxes in pairs]


def test_old_layout_checkpoint_loads_with_the_same_settings_and_detections(
    square_checkpoint: Path, tmp_path: Path
) -> None:
    path, hparams = old_layout_checkpoint(square_checkpoint, tmp_path / "old.ckpt")
    with pytest.warns(DeprecationWarning, match="model_kwargs.matrix_nms is deprecated"):
        module = DetectionModule.load_from_checkpoint(path, map_location="cpu")
    module.eval()
    assert module.hparams.batched == {
        **vars(BatchedOptions()),
        "fixpoint_nms": True,
        "pool_every_level": False,
    }
    torchvision_args = dict(hparams["model_kwargs"])
    del torchvision_args["matrix_nms"], torchvision_args["masked_pooling"]
    assert module.hparams.model_kwargs == torchvision_args
    for key in ("lr", "score_threshold", "target_recall", "area_ranges", "milestones"):
        assert model_setting(module.hparams, key) == hparams[key], key
    assert module.model.roi_heads.score_thresh == hparams["model_kwargs"]["box_score_thresh"]

    images, _ = square_images(3)
    tensors = [torch.from_numpy(image).permute(2, 0, 1).float() / 255 for image in images]
    reference = reference_model(square_checkpoint, hparams)
    with torch.no_grad():
        got, expected = module(tensors), reference(tensors)
    assert sum(len(e["boxes"]) for e in expected) >= 3  # the squares are found
    for ours, theirs in zip(got, expected, strict=True):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(ours[key], theirs[key]), key


def test_old_layout_flat_settings_land_in_their_groups(
    square_checkpoint: Path, tmp_path: Path
) -> None:
    """Lightning passes a checkpoint's hyper-parameters to __init__ only when it takes them:
    every flat name of the old layout must arrive in its group, none dropped."""
    path, hparams = old_layout_checkpoint(square_checkpoint, tmp_path / "old.ckpt")
    with pytest.warns(DeprecationWarning, match="lr is deprecated: set optimization.lr instead"):
        module = DetectionModule.load_from_checkpoint(path, map_location="cpu")
    for name, group in FLAT_NAMES.items():
        assert getattr(getattr(module, group), name) == hparams[name], name
        assert module.hparams[group][name] == hparams[name], name
        assert name not in module.hparams

    # Saved again, the settings are grouped and load without a deprecation.
    resaved = {**torch.load(path, weights_only=True), "hyper_parameters": dict(module.hparams)}
    torch.save(resaved, tmp_path / "new.ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        again = DetectionModule.load_from_checkpoint(tmp_path / "new.ckpt", map_location="cpu")
    assert (again.optimization, again.evaluation) == (module.optimization, module.evaluation)
    assert again.hparams == module.hparams


def test_a_flat_name_beside_its_group_in_a_checkpoint_is_given_twice(
    square_checkpoint: Path, tmp_path: Path
) -> None:
    path, hparams = old_layout_checkpoint(square_checkpoint, tmp_path / "old.ckpt")
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["optimization"] = {"lr": 0.02}
    torch.save(ckpt, path)
    with pytest.raises(InvalidInputError) as info:
        DetectionModule.load_from_checkpoint(path, map_location="cpu")
    assert str(info.value) == "field 'lr': given twice: flat and as optimization.lr"


def box_iou(a: list[float], b: np.ndarray) -> float:
    ax0, ay0, ax1, ay1 = a[0], a[1], a[0] + a[2], a[1] + a[3]
    bx0, by0, bx1, by1 = (float(v) for v in b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    return inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)


def test_predict_writes_coco_results_of_a_folder(
    square_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = old_layout_checkpoint(square_checkpoint, tmp_path / "old.ckpt")
    images, boxes = square_images(3, seed=11)
    folder = tmp_path / "unlabelled"
    for i, image in enumerate(images):
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / ("sub" if i == 2 else "") / f"part{i}.png"), image[..., ::-1])
    (folder / ".hidden.png").write_bytes(b"not read")
    # The class list comes from the training json of the config, as in `detection test`.
    train = tmp_path / "train.json"
    train.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "sub/part2.png", "width": 64, "height": 64}],
        "annotations": [], "categories": [{"id": 7, "name": "square"}],
    }))  # fmt: skip
    root = tmp_path / "run"
    code = main([
        "predict", "--config", "configs/cpu_quick.yaml", f"--ckpt_path={path}",
        f"--data.train_annotations={train}", f"--data.train_images={folder}",
        "--data.val_annotations=null", "--data.val_images=null",
        "--data.test_annotations=null", "--data.test_images=null",
        f"--data.predict_images={folder}", "--data.num_workers=0",
        f"--trainer.default_root_dir={root}", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    records = json.loads((root / "coco_results.json").read_text())
    names = ["part0.png", "part1.png", "sub/part2.png"]
    assert {r["file_name"] for r in records} <= set(names)
    for image_id, (name, truth) in enumerate(zip(names, boxes, strict=True), start=1):
        mine = [r for r in records if r["image_id"] == image_id]
        assert mine and all(r["file_name"] == name and r["category_id"] == 7 for r in mine)
        best = max(mine, key=lambda r: r["score"])
        assert best["score"] > 0.5 and box_iou(best["bbox"], truth[0]) > 0.5, (name, best)


def test_print_config_shows_the_typed_batched_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/cpu_quick.yaml", "--model.batched.pad_multiple=64",
              "--print_config"])  # fmt: skip
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    for line in ("  batched:", "    fixpoint_nms: null", "    pool_every_level: null",
                 "    channels_last: false", "    pad_multiple: 64"):  # fmt: skip
        assert f"\n{line}\n" in printed, line


@pytest.mark.parametrize(
    "option", ["--model.batched.fixpoint_nmss=true", "--model.batched.pad_multiple=many"]
)
def test_a_wrong_batched_option_is_refused_when_the_config_is_read(
    option: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "configs/cpu_quick.yaml", option, "--print_config"])
    assert exit_info.value.code == 2
    assert option.split("=")[0].removeprefix("--") in capsys.readouterr().err
