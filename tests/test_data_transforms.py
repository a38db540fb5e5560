"""build_transforms: YAML specs, clear errors, and boxes that stay valid under augmentation."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detection.core.errors import InvalidInputError
from detection.data.transforms import (
    DEFAULT_TRAIN_TRANSFORMS,
    GRAY_SAFE_PIXEL_TRANSFORMS,
    apply_transforms,
    build_transforms,
    keeps_gray,
)

FLIP_AND_JITTER = [
    *DEFAULT_TRAIN_TRANSFORMS,
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
]

GEOMETRIC_SPEC = [
    *FLIP_AND_JITTER,
    {"name": "RandomScale", "scale_limit": [-0.5, 0.5], "p": 0.5},
    {"name": "Affine", "rotate": [-30, 30], "translate_percent": [-0.2, 0.2], "p": 0.5},
    {"name": "OneOf", "transforms": [{"name": "VerticalFlip"}, {"name": "Transpose"}], "p": 0.5},
    {"name": "RandomRotate90", "p": 0.5},  # a symmetry that swaps height and width
    {"name": "RandomCrop", "height": 8, "width": 8, "pad_if_needed": True, "p": 0.3},
    {"name": "Resize", "height": 12, "width": 10, "p": 0.3},
    {"name": "GaussianBlur", "p": 0.3},
]


def test_none_or_empty_spec_means_no_transforms():
    assert build_transforms(None, train=True) is None
    assert build_transforms([], train=False) is None


def test_spec_builds_a_bbox_safe_compose():
    compose = build_transforms(FLIP_AND_JITTER, train=True, min_visibility=0.3)
    assert isinstance(compose, A.Compose)
    assert [type(t).__name__ for t in compose.transforms] == [
        "HorizontalFlip",
        "RandomBrightnessContrast",
    ]
    params = compose.processors["bboxes"].params
    assert params.format == "pascal_voc" and params.label_fields == ["labels"]
    assert params.clip and params.filter_invalid_bboxes and params.min_visibility == 0.3


def test_flip_keeps_labels_with_their_boxes():
    compose = build_transforms([{"name": "HorizontalFlip", "p": 1.0}], train=True)
    image = np.zeros((20, 30, 3), np.uint8)
    boxes = np.array([[0, 0, 10, 5], [20, 10, 30, 20]], np.float32)
    out = compose(image=image, bboxes=boxes, labels=np.array([1, 2]))
    np.testing.assert_allclose(out["bboxes"], [[20, 0, 30, 5], [0, 10, 10, 20]])
    assert list(out["labels"]) == [1, 2]


def test_unknown_transform_name_is_named_with_suggestions():
    with pytest.raises(InvalidInputError) as info:
        build_transforms(
            [{"name": "HorizontalFlip"}, {"name": "HorizonalFlip", "p": 1}], train=True
        )
    message = str(info.value)
    assert "transforms[1]" in message and "'HorizonalFlip'" in message
    assert "HorizontalFlip" in message.split("did you mean")[1] and "\n" not in message


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ([{"name": "RandomScale", "scale_limt": 0.2}], ["RandomScale", "scale_limt"]),
        ([{"name": "RandomScale", "scale_limit": "big"}], ["RandomScale", "scale_limit"]),
        ([{"p": 0.5}], ["transforms[0]", "'name'"]),
        ([{"name": "Compose", "transforms": []}], ["cannot be nested"]),
        ([{"name": "OneOf"}], ["transforms"]),
    ],
)
def test_bad_spec_is_a_one_line_error(spec, words):
    with pytest.raises(InvalidInputError) as info:
        build_transforms(spec, train=True)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_eval_refuses_transforms_that_move_pixels():
    brighten = build_transforms(
        [{"name": "RandomBrightnessContrast", "brightness_limit": (0.3, 0.3), "p": 1.0}],
        train=False,
    )
    image = np.full((8, 8, 3), 100, np.uint8)
    out = brighten(image=image, bboxes=np.zeros((0, 4)), labels=np.zeros(0, np.int64))
    assert out["image"].shape == image.shape and out["image"].mean() > 100  # pixels, not boxes
    with pytest.raises(InvalidInputError, match="moves pixels"):
        build_transforms([{"name": "RandomScale"}], train=False)


def test_seed_makes_augmentation_reproducible():
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    boxes, labels = np.array([[2, 2, 20, 20]], np.float32), np.array([1])
    a = build_transforms(FLIP_AND_JITTER, train=True, seed=3)
    b = build_transforms(FLIP_AND_JITTER, train=True, seed=3)
    for _ in range(5):
        out_a = a(image=image, bboxes=boxes, labels=labels)
        out_b = b(image=image, bboxes=boxes, labels=labels)
        np.testing.assert_array_equal(out_a["image"], out_b["image"])


@st.composite
def samples(draw):
    height = draw(st.integers(8, 64))
    width = draw(st.integers(8, 64))
    n = draw(st.integers(0, 6))
    boxes = []
    for _ in range(n):
        x1 = draw(st.floats(0, width - 1, allow_nan=False))
        y1 = draw(st.floats(0, height - 1, allow_nan=False))
        x2 = draw(st.floats(x1 + 0.5, width, allow_nan=False))
        y2 = draw(st.floats(y1 + 0.5, height, allow_nan=False))
        boxes.append([x1, y1, min(x2, width), min(y2, height)])
    return (
        height,
        width,
        np.array(boxes, np.float32).reshape(-1, 4),
        draw(st.integers(0, 2**31 - 1)),
    )


@settings(max_examples=60, deadline=None)
@given(samples(), st.floats(0.0, 0.9))
def test_augmented_boxes_stay_valid_and_inside_the_image(sample, min_visibility):
    height, width, boxes, seed = sample
    compose = build_transforms(GEOMETRIC_SPEC, train=True, min_visibility=min_visibility, seed=seed)
    labels = np.arange(1, len(boxes) + 1)  # one label per box, to follow them
    image = np.full((height, width, 3), 128, np.uint8)
    out_image, out_boxes, out_labels = apply_transforms(compose, image, boxes, labels)
    out_h, out_w = out_image.shape[:2]
    assert out_image.dtype == np.uint8 and out_image.shape[2] == 3
    assert out_boxes.dtype == np.float32 and out_labels.dtype == np.int64
    assert len(out_boxes) == len(out_labels) <= len(boxes)
    assert set(out_labels.tolist()) <= set(labels.tolist())
    assert len(set(out_labels.tolist())) == len(out_labels)  # no box duplicated or relabelled
    if len(out_boxes):
        x1, y1, x2, y2 = out_boxes.T
        assert (x1 >= 0).all() and (y1 >= 0).all()
        assert (x2 <= out_w).all() and (y2 <= out_h).all()
        assert (x1 < x2).all() and (y1 < y2).all()


@settings(max_examples=80, deadline=None)
@given(samples(), st.just(0.0) | st.floats(0.0, 0.9), st.booleans(), st.booleans())
def test_fast_path_matches_albumentations_compose(sample, min_visibility, each, gray):
    height, width, boxes, seed = sample
    labels = np.arange(1, len(boxes) + 1) * 10
    rng = np.random.default_rng(seed)
    shape = (height, width) if gray else (height, width, 3)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    slow = build_transforms(GEOMETRIC_SPEC, train=True, min_visibility=min_visibility, seed=seed)
    fast = build_transforms(GEOMETRIC_SPEC, train=True, min_visibility=min_visibility, seed=seed)
    for compose in (slow, fast):
        compose.processors["bboxes"].params.check_each_transform = each
        compose.check_each_transform = (compose.processors["bboxes"],) if each else ()
    for _ in range(3):  # the random streams must stay in step over several calls
        out_image, out_boxes, out_labels = apply_transforms(fast, image, boxes, labels)
        try:
            expected = slow(image=image, bboxes=boxes, labels=labels)
        except ValueError:
            # Without per-transform checks albumentations rejects boxes clipped to zero width;
            # the fast path drops them (the validity test covers its output).
            assert not each
            return
        np.testing.assert_array_equal(out_image, expected["image"])
        np.testing.assert_allclose(
            out_boxes, np.asarray(expected["bboxes"]).reshape(-1, 4), atol=1e-3
        )
        assert out_labels.tolist() == list(expected["labels"])


def test_keeps_gray_only_for_channel_blind_transforms():
    assert keeps_gray(build_transforms(FLIP_AND_JITTER, train=True))
    assert keeps_gray(build_transforms(GEOMETRIC_SPEC, train=True))
    assert not keeps_gray(build_transforms([{"name": "HueSaturationValue"}], train=True))
    assert not keeps_gray(
        build_transforms([{"name": "OneOf", "transforms": [{"name": "ToGray"}]}], train=True)
    )


@pytest.mark.parametrize("name", sorted(GRAY_SAFE_PIXEL_TRANSFORMS))
def test_gray_safe_transforms_treat_gray_like_each_rgb_channel(name):
    gray = np.random.default_rng(0).integers(0, 256, (24, 32), dtype=np.uint8)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    boxes, labels = np.array([[2, 2, 20, 20]], np.float32), np.array([1])
    spec = [{"name": name, "p": 1.0}]
    out_gray, _, _ = apply_transforms(
        build_transforms(spec, train=True, seed=5), gray, boxes, labels
    )
    out_rgb, _, _ = apply_transforms(build_transforms(spec, train=True, seed=5), rgb, boxes, labels)
    assert out_gray.shape == gray.shape and out_gray.dtype == np.uint8
    if name not in {"GaussNoise", "MultiplicativeNoise"}:  # noise is drawn per channel
        np.testing.assert_array_equal(out_gray, out_rgb[:, :, 0])
