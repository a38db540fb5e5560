"""The RoI pooler's scales come from the backbone, not from the first image a model sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from square_model import square_image
from test_batch_independence import assert_same_detections

from detection.inference.predictor import Detector
from detection.models.checkpoint import load_model
from detection.models.faster_rcnn import as_torchvision, build_model

pytestmark = pytest.mark.usefixtures("single_thread")  # one torch thread: see conftest.py

RESNET_FPN_SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]  # the strides of layers 1-4


@pytest.mark.parametrize("impl", ["torchvision", "batched"])
def test_scales_are_the_backbone_strides(impl: str) -> None:
    model = build_model("fasterrcnn_resnet18_fpn", 2, min_size=64, max_size=64, impl=impl)
    pooler = as_torchvision(model).roi_heads.box_roi_pool
    assert pooler.scales == RESNET_FPN_SCALES
    assert (pooler.map_levels.k_min, pooler.map_levels.k_max) == (2, 5)
    assert as_torchvision(model).training  # the probe left the mode as built


def test_mobilenet_scales_match_its_feature_maps() -> None:
    model = build_model("fasterrcnn_mobilenet_v3_large_320_fpn", 2)
    pooler = model.roi_heads.box_roi_pool
    with torch.no_grad():
        features = model.eval().backbone(torch.zeros(1, 3, 320, 320))
    names = [n for n in pooler.featmap_names if n in features]
    assert pooler.scales == [features[n].shape[-2] / 320 for n in names] and len(names) == 2


def test_a_thin_first_image_leaves_later_detections_alone(square_checkpoint: Path) -> None:
    """torchvision would infer level 0's scale from this strip as 1/2 (8 feature rows for 16
    image rows, the rest padding) and keep it; the next images were then pooled from the wrong
    places (every score of the trained square model became 0.488, no square found)."""
    rng = np.random.default_rng(11)
    strip = square_image(rng, 380, 96, squares=1, size=24)[0]
    squares = [square_image(rng, 64, 64, squares=1, size=16)[0] for _ in range(3)]

    def detector() -> Detector:
        model, meta = load_model(square_checkpoint)
        return Detector(as_torchvision(model), meta, device="cpu")

    model, _ = load_model(square_checkpoint)
    with torch.no_grad():  # the strip's own level 0: its height against the unpadded image's
        strip_tensor = torch.from_numpy(strip).permute(2, 0, 1).float() / 255
        batch, _ = as_torchvision(model).eval().transform([strip_tensor])
        level0 = model.backbone(batch.tensors)["0"]
    assert level0.shape[-2] / batch.image_sizes[0][0] == 1 / 2  # what torchvision would keep

    want = detector().predict(squares)
    assert {p.decision for p in want} == {"fail"}  # every square found when nothing came first
    seen_strip_first = detector()
    seen_strip_first.predict(strip)
    assert_same_detections(want, seen_strip_first.predict(squares))
    # The batched implementation pools each call with the same scales: the same detections.
    batched, meta = load_model(square_checkpoint)
    assert_same_detections(
        Detector(batched, meta, device="cpu").predict([strip, *squares]),
        seen_strip_first.predict([strip, *squares]),
    )
