"""Model factory: variants, weight names, local weight files, safe loading, offline errors."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models._api as tv_api

from detection.core.errors import ConfigError, WeightsError
from detection.models.faster_rcnn import available_models, build_model

SMALL = {"min_size": 64, "max_size": 64}


@pytest.mark.parametrize("name", available_models())
def test_every_variant_builds_and_detects(name: str) -> None:
    model = build_model(name, num_classes=3, **SMALL).eval()
    assert model.roi_heads.box_predictor.cls_score.out_features == 4  # + background
    with torch.no_grad():
        (out,) = model([torch.rand(3, 64, 80)])
    assert set(out) == {"boxes", "labels", "scores"}
    assert out["boxes"].shape[1] == 4 and (out["labels"] <= 3).all()


def test_unknown_model_and_weights_are_clear() -> None:
    with pytest.raises(ConfigError, match="unknown model 'yolo'.*fasterrcnn_resnet50_fpn"):
        build_model("yolo", 3)
    with pytest.raises(WeightsError, match="unknown weights 'IMAGENET'.*DEFAULT, COCO_V1"):
        build_model("fasterrcnn_resnet50_fpn", 3, weights="IMAGENET")


def _same_parameters(source: torch.nn.Module, loaded: torch.nn.Module, skip: str = "\0") -> bool:
    """Every tensor of `loaded` (but those under `skip`) equals the source's."""
    sa = source.state_dict()
    # Pretrained models use frozen batch norms, which keep no batch counter.
    keys = [k for k in loaded.state_dict() if not k.startswith(skip)]
    return all(k in sa and torch.equal(loaded.state_dict()[k], sa[k]) for k in keys)


def test_local_pth_and_lightning_ckpt_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = build_model("fasterrcnn_resnet18_fpn", 3, **SMALL)
    pth = tmp_path / "weights.pth"
    torch.save(source.state_dict(), pth)
    assert _same_parameters(
        source, build_model("fasterrcnn_resnet18_fpn", 3, weights=str(pth), **SMALL)
    )

    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, ckpt)
    assert _same_parameters(
        source, build_model("fasterrcnn_resnet18_fpn", 3, weights=str(ckpt), **SMALL)
    )


def test_weights_for_another_class_count_get_a_fresh_predictor(tmp_path: Path) -> None:
    source = build_model("fasterrcnn_resnet18_fpn", 90, **SMALL)
    pth = tmp_path / "coco.pth"
    torch.save(source.state_dict(), pth)
    model = build_model("fasterrcnn_resnet18_fpn", 2, weights=str(pth), **SMALL)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3
    assert _same_parameters(source, model, skip="roi_heads.box_predictor")


def test_torchvision_weight_name_with_another_class_count(monkeypatch: pytest.MonkeyPatch) -> None:
    coco = build_model("fasterrcnn_mobilenet_v3_large_320_fpn", 90)  # COCO's 91 with background
    requested = []

    def fake_download(url: str, *args: object, **kwargs: object) -> dict[str, torch.Tensor]:
        requested.append(url)
        return coco.state_dict()

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake_download)
    model = build_model("fasterrcnn_mobilenet_v3_large_320_fpn", 5, weights="DEFAULT")
    assert requested and requested[0].endswith(".pth")
    assert model.roi_heads.box_predictor.cls_score.out_features == 6
    assert _same_parameters(coco, model, skip="roi_heads.box_predictor")


def test_failed_download_says_how_to_pass_a_local_file(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, *args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsError) as info:
        build_model("fasterrcnn_resnet50_fpn", 3, weights="COCO_V1")
    message = str(info.value)
    assert "\n" not in message
    assert "https://download.pytorch.org/models/fasterrcnn_resnet50_fpn_coco" in message
    assert "--model.weights /path/to/weights.pth" in message


class _Payload:
    """Unpickling this would create a file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_weight_files_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"backbone.body.conv1.weight": _Payload(marker)}, evil)
    with pytest.raises(WeightsError, match="cannot load weights safely"):
        build_model("fasterrcnn_resnet18_fpn", 3, weights=str(evil), **SMALL)
    assert not marker.exists()


def test_missing_weight_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="nothere.pth: weights file not found"):
        build_model("fasterrcnn_resnet18_fpn", 3, weights=str(tmp_path / "nothere.pth"), **SMALL)


def test_local_imagenet_backbone_file_loads_like_downloaded_weights(tmp_path: Path) -> None:
    import torchvision

    classifier = torchvision.models.resnet18()
    pth = tmp_path / "resnet18.pth"
    torch.save(classifier.state_dict(), pth)  # an ImageNet classifier file: has fc.* too
    body = build_model(
        "fasterrcnn_resnet18_fpn", 3, weights_backbone=str(pth), **SMALL
    ).backbone.body
    assert torch.equal(body.conv1.weight, classifier.conv1.weight)
    assert type(body.bn1).__name__ == "FrozenBatchNorm2d"
    assert not body.conv1.weight.requires_grad and body.layer4[0].conv1.weight.requires_grad
