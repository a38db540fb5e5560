"""The batched Faster R-CNN is torchvision's model: same outputs, losses, gradients, state dict."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from batch_norm import train_with_fixed_batch_norm
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection._utils import BoxCoder, Matcher
from torchvision.ops import box_iou as tv_box_iou
from torchvision.ops import nms

from detection.models.batched import BatchedFasterRCNN
from detection.models.batched.boxes import box_iou, decode, encode
from detection.models.batched.matching import match, sample_balanced
from detection.models.batched.nms import fixpoint_nms_keep
from detection.models.faster_rcnn import as_torchvision, build_model
from detection.models.op_count import count_training_step, sync_ops

# Tiny images and few proposals keep each case to a second or two on a CPU.
SMALL = {
    "min_size": 64,
    "max_size": 96,
    "rpn_pre_nms_top_n_train": 300,
    "rpn_post_nms_top_n_train": 150,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 150,
}
# Every candidate is sampled, so torchvision's random sampler and ours pick the same sets.
TAKE_ALL = {
    "rpn_batch_size_per_image": 10**6,
    "rpn_positive_fraction": 0.5,
    "box_batch_size_per_image": 10**6,
    "box_positive_fraction": 0.5,
}


def _pair(name: str, **kwargs: Any) -> tuple[FasterRCNN, BatchedFasterRCNN]:
    torch.manual_seed(0)
    reference = build_model(name, 3, impl="torchvision", **{**SMALL, **kwargs})
    return reference, BatchedFasterRCNN(reference)


def _images(sizes: list[tuple[int, int]], seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=generator) for h, w in sizes]


def _canonical(detections: dict) -> dict:
    """Detections by decreasing score, ties (saturated random heads give many) by box."""
    keys = torch.cat([-detections["scores"][:, None], detections["boxes"]], dim=1).tolist()
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return {name: value[order] for name, value in detections.items()}


def _assert_same_detections(expected: list[dict], actual: list[dict]) -> None:
    assert len(expected) == len(actual)
    for want, got in zip(expected, actual, strict=True):
        want, got = _canonical(want), _canonical(got)
        assert want["labels"].tolist() == got["labels"].tolist()
        torch.testing.assert_close(got["boxes"], want["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(got["scores"], want["scores"], atol=1e-4, rtol=0)


def _awake(model: FasterRCNN, seed: int) -> FasterRCNN:
    """Re-draw the backbone's convolutions (He init by fan-in) and a small box predictor, seeded,
    so that a random model's scores are distinct instead of tied.

    torchvision initialises convolutions by fan-out, which for a depthwise convolution
    (MobileNetV3) counts channels a unit never sees: with batch norm at its initial statistics
    (eval mode) the features shrink to about 1e-9, every proposal gets its class's bias as logits
    and all detections of a class tie (0.2453), so which of them NMS keeps depends on the order
    of ties, which moves between CPUs. The small predictor keeps softmax off 0 and 1, where
    float32 would round scores to equal.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.backbone.body.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                noise = torch.randn(module.weight.shape, generator=generator)
                module.weight.copy_(noise * (2 / fan_in) ** 0.5)
        predictor = model.roi_heads.box_predictor
        for layer in (predictor.cls_score, predictor.bbox_pred):
            noise = torch.randn(layer.weight.shape, generator=generator)
            layer.weight.copy_(noise * 0.01 / layer.in_features**0.5)
    return model


def _assert_distinct_scores(detections: list[dict]) -> None:
    """Equal scores would make the comparison depend on tie order: fail loudly instead."""
    for detection in detections:
        scores = detection["scores"]
        assert len(scores.unique()) == len(scores), "tied scores: the comparison needs new data"


@pytest.mark.parametrize(
    ("name", "sizes", "settings", "awake_seed"),
    [
        ("fasterrcnn_resnet18_fpn", [(100, 130)], {}, None),
        ("fasterrcnn_resnet18_fpn", [(100, 130), (128, 96), (64, 64), (75, 200)], {}, None),
        ("fasterrcnn_resnet50_fpn", [(96, 96), (80, 120)], {}, None),
        ("fasterrcnn_resnet50_fpn_v2", [(90, 110)], {}, None),
        # Its feature maps have strides 32 and 64: at 64 px they are 2x3 cells, where many
        # proposals pool the same (border-clamped) features and tie; at 160 px they do not.
        (
            "fasterrcnn_mobilenet_v3_large_320_fpn",
            [(120, 100), (64, 96)],
            {"min_size": 160, "max_size": 200},
            11,
        ),
    ],
)
def test_eval_outputs_equal_torchvision(
    name: str, sizes: list[tuple[int, int]], settings: dict, awake_seed: int | None
) -> None:
    # A low score threshold keeps 100 detections per image even from random weights.
    reference, batched = _pair(name, box_score_thresh=0.0, **settings)
    if awake_seed is not None:
        _awake(reference, awake_seed)  # the batched model shares these modules
    images = _images(sizes)
    images.append(torch.zeros(3, 70, 90))  # a blank image
    with torch.no_grad():
        expected = reference.eval()(images)
        actual = batched.eval()(images)
    assert sum(len(d["boxes"]) for d in expected) > 0
    _assert_distinct_scores(expected)
    _assert_same_detections(expected, actual)


def test_gpu_paths_give_torchvision_outputs_and_losses() -> None:
    """The NMS and pooling that run on CUDA, forced on the CPU."""
    reference, batched = _pair("fasterrcnn_resnet18_fpn", box_score_thresh=0.0, **TAKE_ALL)
    batched.fixpoint_nms = batched.pool_every_level = True
    images = _images([(100, 130), (128, 96), (64, 64), (75, 200)])
    with torch.no_grad():
        _assert_same_detections(reference.eval()(images), batched.eval()(images))
    train_with_fixed_batch_norm(reference)
    batched.training = True
    expected, actual = reference(images[:3], _targets()), batched(images[:3], _targets())
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-7)


def _random_boxes(
    shape: tuple[int, ...], spread: float, min_side: float, extra: float, generator: torch.Generator
) -> torch.Tensor:
    """Boxes centred in [0, spread)^2 with sides in [min_side, min_side + extra)."""
    centres = torch.rand(*shape, 2, generator=generator) * spread
    sides = min_side + torch.rand(*shape, 2, generator=generator) * extra
    return torch.cat([centres - sides / 2, centres + sides / 2], dim=-1)


def test_fixpoint_nms_keep_equals_torchvision_nms() -> None:
    generator = torch.Generator().manual_seed(5)
    # Clusters of overlapping boxes make long suppression chains.
    boxes = _random_boxes((6, 40), 60, 8, 12, generator)
    scores = torch.rand(6, 40, generator=generator)
    valid = torch.rand(6, 40, generator=generator) > 0.2
    keep = fixpoint_nms_keep(boxes, scores, valid, 0.5, check_every=1)
    for row in range(6):
        index = valid[row].nonzero()[:, 0]
        expected = index[nms(boxes[row, index], scores[row, index], 0.5)]
        assert sorted(keep[row].nonzero()[:, 0].tolist()) == sorted(expected.tolist())
    # The IoUs in chunks of rows (here 4, then 2) give the same result.
    chunked = fixpoint_nms_keep(
        boxes, scores, valid, 0.5, check_every=3, pairs_per_chunk=40 * 40 * 4
    )
    assert torch.equal(chunked, keep)


def test_images_without_detections_give_empty_results() -> None:
    reference, batched = _pair("fasterrcnn_resnet18_fpn", box_score_thresh=0.99)
    images = _images([(100, 130), (64, 64)])
    with torch.no_grad():
        expected = reference.eval()(images)
        actual = batched.eval()(images)
    assert [len(d["boxes"]) for d in actual] == [0, 0]
    assert actual[0]["boxes"].shape == (0, 4) and actual[0]["labels"].dtype == torch.int64
    _assert_same_detections(expected, actual)


def test_cpu_path_pools_only_slots_that_some_image_fills() -> None:
    torch.manual_seed(0)
    # Every proposal that survives NMS is kept: the images keep different numbers.
    settings = {**SMALL, "rpn_post_nms_top_n_test": 10**4}
    reference = build_model("fasterrcnn_resnet18_fpn", 3, impl="torchvision", **settings)
    batched = BatchedFasterRCNN(reference)
    proposal_counts, pooled_rows = [], []
    reference.rpn.register_forward_hook(
        lambda module, args, output: proposal_counts.extend(len(p) for p in output[0])
    )
    # The box head is one module, shared by both models.
    reference.roi_heads.box_head.register_forward_hook(
        lambda module, args, output: pooled_rows.append(len(output))
    )
    images = _images([(100, 130), (64, 64), (80, 96)])
    with torch.no_grad():
        reference.eval()(images)
        batched.eval()(images)
    assert len(set(proposal_counts)) > 1  # images with different numbers of proposals
    assert pooled_rows == [sum(proposal_counts), len(images) * max(proposal_counts)]


def _targets() -> list[dict[str, torch.Tensor]]:
    return [
        {
            "boxes": torch.tensor([[10.0, 20, 50, 60], [30, 30, 90, 80]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.tensor([[5.0, 5, 40, 100]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},  # a negative
    ]


@pytest.mark.parametrize("name", ["fasterrcnn_resnet18_fpn", "fasterrcnn_resnet50_fpn_v2"])
def test_training_losses_and_gradients_equal_torchvision(name: str) -> None:
    reference, batched = _pair(name, **TAKE_ALL)
    train_with_fixed_batch_norm(reference)
    batched.training = True
    images = _images([(100, 130), (128, 96), (64, 64)])
    parameters = [p for p in reference.parameters() if p.requires_grad]
    expected = reference(images, _targets())
    actual = batched(images, _targets())
    assert list(actual) == list(expected)
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-7)
    want = torch.autograd.grad(sum(expected.values()), parameters, allow_unused=True)
    got = torch.autograd.grad(sum(actual.values()), parameters, allow_unused=True)
    for w, g in zip(want, got, strict=True):
        assert (w is None) == (g is None)
        if w is not None:
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-6)


def test_sampling_is_seedable_and_follows_torchvision_rule() -> None:
    generator = torch.Generator().manual_seed(3)
    labels = torch.full((3, 400), -1)
    labels[0, :10] = 1  # few positives: all taken, negatives fill up
    labels[0, 10:300] = 0
    labels[1, :200] = 2  # many positives: a quarter of the batch, negatives fill up
    labels[1, 200:220] = 0
    labels[2, 50:60] = 0  # too few of both: all of them, the rest of the slots invalid
    picks = sample_balanced(labels, 64, 0.25, generator)
    again = sample_balanced(labels, 64, 0.25, torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(picks, again, strict=True))
    indices, positive, valid = picks
    for image, (want_pos, want_neg) in enumerate([(10, 54), (16, 20), (0, 10)]):
        chosen = indices[image][valid[image]]
        chosen_labels = labels[image, chosen]
        assert len(set(chosen.tolist())) == len(chosen)  # no candidate twice
        assert int((chosen_labels >= 1).sum()) == want_pos == int(positive[image].sum())
        assert int((chosen_labels == 0).sum()) == want_neg
    # Positives are drawn at random: another seed picks another subset.
    other = sample_balanced(labels, 64, 0.25, torch.Generator().manual_seed(4))[0]
    assert set(other[1, :16].tolist()) != set(indices[1, :16].tolist())


def test_box_coding_and_matching_equal_torchvision() -> None:
    generator = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 50, 2, generator=generator) * 100
    proposals = torch.cat([xy, xy + 1 + torch.rand(2, 50, 2, generator=generator) * 50], dim=-1)
    gt = proposals[:, :6] + torch.rand(2, 6, 4, generator=generator) * 8
    gt[..., 2:] += 10
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    for i in range(2):
        torch.testing.assert_close(
            encode(gt[i, :5][:, None], proposals[i][None], coder.weights).reshape(-1, 4),
            coder.encode_single(gt[i, :5].repeat_interleave(50, 0), proposals[i].repeat(5, 1)),
            rtol=0,
            atol=0,
        )
        codes = torch.randn(50, 8, generator=generator)
        torch.testing.assert_close(
            decode(
                codes.view(50, 2, 4), proposals[i][:, None], coder.weights, coder.bbox_xform_clip
            ),
            coder.decode_single(codes, proposals[i]).view(50, 2, 4),
            rtol=0,
            atol=0,
        )
    gt_valid = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    iou = box_iou(gt, proposals)
    for allow in (True, False):
        matches = match(iou, gt_valid, 0.5, 0.3, allow)
        matcher = Matcher(0.5, 0.3, allow_low_quality_matches=allow)
        for i in range(2):
            n = int(gt_valid[i].sum())
            assert torch.equal(iou[i, :n], tv_box_iou(gt[i, :n], proposals[i]))
            assert torch.equal(matches[i], matcher(tv_box_iou(gt[i, :n], proposals[i])))


def test_anchors_are_torchvision_anchors_for_every_image() -> None:
    from torchvision.models.detection.image_list import ImageList

    reference, _ = _pair("fasterrcnn_resnet18_fpn")
    images = torch.zeros(3, 3, 96, 128)
    features = list(reference.backbone(images).values())
    per_image = reference.rpn.anchor_generator(ImageList(images, [(96, 128)] * 3), features)
    once = reference.rpn.anchor_generator(ImageList(images, [(96, 128)]), features)[0]
    assert all(torch.equal(anchors, once) for anchors in per_image)


def test_state_dicts_load_both_ways() -> None:
    torch.manual_seed(1)
    batched = build_model("fasterrcnn_resnet18_fpn", 2, impl="batched", **SMALL)
    torch.manual_seed(2)
    reference = build_model("fasterrcnn_resnet18_fpn", 2, impl="torchvision", **SMALL)
    assert list(batched.state_dict()) == list(reference.state_dict())
    reference.load_state_dict(batched.state_dict())
    copy_back = copy.deepcopy(batched)
    copy_back.load_state_dict(reference.state_dict())
    images = _images([(96, 128)])
    with torch.no_grad():
        _assert_same_detections(reference.eval()(images), copy_back.eval()(images))
    assert as_torchvision(batched) is not batched and as_torchvision(reference) is reference


def test_training_step_on_the_cuda_paths_waits_only_to_see_nms_converge() -> None:
    _, batched = _pair("fasterrcnn_resnet18_fpn")
    batched.pool_every_level = batched.fixpoint_nms = True  # what runs on CUDA
    batched.train()
    ops = count_training_step(batched, _images([(100, 130), (128, 96), (64, 64)]), _targets())
    counts = sync_ops(ops)
    looks = counts.pop("aten::equal")
    assert 1 <= looks <= 6 and not counts, counts
    # The count sees the syncs when there are some: the CPU path's nms and pooling by level.
    batched.pool_every_level = batched.fixpoint_nms = False
    cpu_path = sync_ops(count_training_step(batched, _images([(100, 130)]), _targets()[:1]))
    assert cpu_path.get("torchvision::nms", 0) > 0 and cpu_path.get("aten::nonzero", 0) > 0


def test_channels_last_and_padding_buckets_keep_the_detections() -> None:
    reference, _ = _pair("fasterrcnn_resnet18_fpn", box_score_thresh=0.0)
    images = _images([(100, 130), (64, 64)])
    with torch.no_grad():
        expected = reference.eval()(images)
        fast = BatchedFasterRCNN(copy.deepcopy(reference), channels_last=True).eval()
        assert fast.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
        # NHWC convolutions sum in another order: equal up to float rounding.
        actual = fast(images)
        for want, got in zip(expected, actual, strict=True):
            torch.testing.assert_close(got["scores"][:10], want["scores"][:10], atol=1e-3, rtol=0)
        bucketed = BatchedFasterRCNN(reference, pad_multiple=128).eval()
        shapes = []
        bucketed.backbone.register_forward_hook(lambda m, args, out: shapes.append(args[0].shape))
        detections = bucketed(images)
    # The model sees 128 px buckets (not 96x128 -> 96x128 at 32 px) and still finds boxes there.
    assert shapes[0][-2:] == (128, 128)
    assert [len(d["boxes"]) for d in detections] == [100, 100]
    with pytest.raises(Exception, match="impl 'batched'"):
        build_model("fasterrcnn_resnet18_fpn", 2, impl="torchvision", channels_last=True)


# Rounded layers from the image to a ResNet18-FPN loss: 17 backbone convolutions, 2 FPN, 3 RPN
# head, 3 box head (fc6, fc7, predictor).
AUTOCAST_DEPTH = 25


@pytest.mark.parametrize(
    ("dtype", "cuda_paths"), [(torch.bfloat16, False), (torch.float16, True)], ids=["bf16", "16"]
)
def test_trains_and_detects_under_autocast(dtype: torch.dtype, cuda_paths: bool) -> None:
    _, batched = _pair("fasterrcnn_resnet18_fpn", **TAKE_ALL)
    # float16 with masked pooling and fixpoint NMS is what 16-mixed runs on a GPU.
    batched.pool_every_level = batched.fixpoint_nms = cuda_paths
    sizes = [(100, 130), (64, 96)]
    images, targets = _images(sizes), _targets()[: len(sizes)]
    with torch.no_grad():  # the reference values only
        expected = batched.train()(images, targets)
    with torch.autocast("cpu", dtype=dtype):
        losses = batched(images, targets)
        sum(losses.values()).backward()
        with torch.no_grad():
            detections = batched.eval()(images)
    # Every candidate sampled: the float32 losses, rounded. Autocast rounds each layer's output
    # to `dtype` (unit roundoff eps / 2: 2**-8 in bf16, 2**-11 in fp16), and a loss sits about
    # AUTOCAST_DEPTH rounded layers below the image; relative errors that add up layer by layer
    # bound it by depth x roundoff: 9.8 % in bf16, 1.2 % in fp16. Where bf16 is emulated the error
    # is far smaller (0.1 %), where a CPU computes bf16 natively it reached 3.4 %; a broken loss
    # (NaN, or off by 2x) still fails.
    rtol = AUTOCAST_DEPTH * torch.finfo(dtype).eps / 2
    for name, loss in losses.items():
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, expected[name], rtol=rtol, atol=1e-4)
    assert all(torch.isfinite(p.grad).all() for p in batched.parameters() if p.grad is not None)
    for detection, (height, width) in zip(detections, sizes, strict=True):
        boxes = detection["boxes"]
        assert len(boxes) > 0 and boxes.dtype == torch.float32
        assert (boxes >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
