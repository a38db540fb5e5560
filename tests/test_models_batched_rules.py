"""The batched model's NMS and option rules: torchvision's batched_nms, ties by index, old names."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import batched_nms

from detection.models.batched import BatchedFasterRCNN
from detection.models.batched.nms import batched_nms_top_k, fixpoint_nms_keep, grouped_nms
from detection.models.batched.ranking import topk_stable
from detection.models.faster_rcnn import build_model


@pytest.mark.parametrize("one_call", [True, False])
def test_equal_scores_rank_by_index(one_call: bool) -> None:
    """Exactly tied scores: the lower index outranks, in every top-k and NMS of the model."""
    # Boxes 1 and 3 coincide, 0 and 2 coincide; all four scores are equal.
    boxes = torch.tensor([[50.0, 50, 60, 60], [0, 0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10]])
    scores = torch.full((4,), 0.5)
    keys = torch.zeros(4, dtype=torch.int64)
    assert grouped_nms(boxes, scores, keys, 0.5, one_call=one_call).tolist() == [0, 1]
    assert grouped_nms(boxes.flip(0), scores, keys, 0.5, one_call=one_call).tolist() == [0, 1]
    keep = fixpoint_nms_keep(boxes[None], scores[None], torch.ones(1, 4, dtype=torch.bool), 0.5)
    assert keep[0].tolist() == [True, True, False, False]
    values, index = topk_stable(torch.tensor([[0.1, 0.7, 0.7, 0.3, 0.7]]), 3)
    assert index.tolist() == [[1, 2, 4]] and torch.equal(values, torch.full((1, 3), 0.7))
    # Four separate tied boxes, two kept per image: the first two.
    apart = torch.tensor([[0.0, 0, 5, 5], [10, 10, 15, 15], [20, 20, 25, 25], [30, 30, 35, 35]])
    index, ok = batched_nms_top_k(
        apart[None], scores[None], keys, 1, torch.ones(1, 4, dtype=torch.bool), 0.5, 2
    )
    assert index.tolist() == [[0, 1]] and ok.all()


def test_deprecated_option_names_still_work() -> None:
    """Checkpoints store `model_kwargs: {matrix_nms: true}`: the old names keep working, warned."""
    reference = build_model(
        "fasterrcnn_resnet18_fpn", 3, impl="torchvision", min_size=64, max_size=96
    )
    with pytest.warns(DeprecationWarning, match="'matrix_nms' is deprecated; use 'fixpoint_nms'"):
        model = BatchedFasterRCNN(reference, matrix_nms=True)
    assert model.fixpoint_nms is True and model.pool_every_level is None
    with pytest.warns(DeprecationWarning, match="use 'pool_every_level'"):
        model = BatchedFasterRCNN(reference, masked_pooling=False)
    assert model.pool_every_level is False
    with pytest.warns(DeprecationWarning, match="use 'pool_every_level'"):
        model.masked_pooling = True
    assert model.pool_every_level is True
    with pytest.warns(DeprecationWarning, match="use 'fixpoint_nms'"):
        assert model.matrix_nms is None
    with pytest.raises(TypeError, match="unexpected keyword argument 'fast'"):
        BatchedFasterRCNN(reference, fast=True)


@pytest.mark.parametrize("one_call", [True, False])
def test_grouped_nms_is_torchvision_batched_nms(one_call: bool) -> None:
    generator = torch.Generator().manual_seed(3)
    centres = torch.rand(500, 2, generator=generator) * 100
    sides = 5 + torch.rand(500, 2, generator=generator) * 30
    boxes = torch.cat([centres - sides / 2, centres + sides / 2], dim=-1)
    scores = torch.rand(500, generator=generator)
    keys = torch.randint(0, 7, (500,), generator=generator)
    kept = grouped_nms(boxes, scores, keys, 0.5, one_call=one_call)
    expected = batched_nms(boxes, scores, keys, 0.5)
    assert kept.tolist() == expected.tolist()  # the same boxes, by decreasing score
    assert grouped_nms(boxes[:0], scores[:0], keys[:0], 0.5, one_call=one_call).numel() == 0
