"""CocoDetection: label mapping, negatives, crowd, degenerate boxes, decoding, bad input."""

from __future__ import annotations

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from coco_files import edit_json, truncate_file, write_coco

from detection.core.errors import ImageReadError, InvalidInputError
from detection.core.images import to_float_image
from detection.data.coco import CocoDetection, read_categories
from detection.data.transforms import build_transforms


def _quiet(annotation_file, image_root, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fixtures below have no degenerate boxes
        return CocoDetection(annotation_file, image_root, **kwargs)


def test_label_mapping_round_trip(tmp_path):
    categories = [
        {"id": 12, "name": "crack"},
        {"id": 3, "name": "scratch"},
        {"id": 7, "name": "dent"},
    ]
    ann, root = write_coco(
        tmp_path,
        [{"boxes": [(1, 1, 5, 5, 12), (10, 10, 5, 5, 3), (20, 20, 5, 5, 7)]}],
        categories=categories,
    )
    dataset = _quiet(ann, root)
    assert dataset.category_ids == [3, 7, 12]
    assert dataset.class_names == ["scratch", "dent", "crack"]
    assert dataset.num_classes == 3
    for label in (1, 2, 3):
        assert dataset.category_id_to_label(dataset.label_to_category_id(label)) == label
    for category_id in (3, 7, 12):
        assert (
            dataset.label_to_category_id(dataset.category_id_to_label(category_id)) == category_id
        )
    _, target = dataset[0]
    # Boxes come out in the json's order here (one image, sorted stably): 12, 3, 7.
    assert target["labels"].tolist() == [3, 1, 2]
    with pytest.raises(KeyError):
        dataset.category_id_to_label(99)
    with pytest.raises(KeyError):
        dataset.label_to_category_id(0)


def test_target_types_and_coordinates(tmp_path):
    ann, root = write_coco(
        tmp_path, [{"id": 17, "width": 64, "height": 48, "boxes": [(4, 6, 10, 8, 3)]}]
    )
    image, target = _quiet(ann, root)[0]
    assert image.dtype == torch.float32 and image.shape == (3, 48, 64)
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.is_contiguous()
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    assert target["boxes"].tolist() == [[4.0, 6.0, 14.0, 14.0]]  # xywh -> xyxy
    assert target["labels"].tolist() == [1]
    assert target["image_id"] == 17 and isinstance(target["image_id"], int)


def test_boxes_are_clipped_to_the_image(tmp_path):
    ann, root = write_coco(tmp_path, [{"boxes": [(-5, 40, 20, 20, 3)]}])
    # Clipped, and said: lint calls such a box an error, so fit must not change it silently.
    with pytest.warns(UserWarning, match=r"clipped 1 boxes .* annotations\[0\] \(id 1\)"):
        dataset = CocoDetection(ann, root)
    _, target = dataset[0]
    assert target["boxes"].tolist() == [[0.0, 40.0, 15.0, 48.0]]


def test_negatives_kept_by_default_and_dropped_with_the_flag(tmp_path):
    specs = [{"boxes": [(1, 1, 5, 5, 3)]}, {"boxes": []}, {"crowd": [(1, 1, 5, 5, 7)]}]
    ann, root = write_coco(tmp_path, specs)
    kept = _quiet(ann, root)
    assert kept.image_ids == [1, 2, 3]
    _, target = kept[1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    dropped = _quiet(ann, root, drop_images_without_annotations=True)
    # An image with only crowd regions has nothing to train on either.
    assert dropped.image_ids == [1] and len(dropped) == 1
    assert dropped[0][1]["image_id"] == 1


def test_crowd_excluded_from_targets_but_kept_in_ground_truth(tmp_path):
    ann, root = write_coco(tmp_path, [{"boxes": [(1, 1, 5, 5, 3)], "crowd": [(20, 20, 10, 10, 7)]}])
    dataset = _quiet(ann, root)
    _, target = dataset[0]
    assert target["labels"].tolist() == [1]
    crowd = [a for a in dataset.ground_truth["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 7
    assert len(dataset.ground_truth["annotations"]) == 2


def test_degenerate_boxes_dropped_with_one_counted_warning(tmp_path):
    boxes = [
        (1, 1, 5, 5, 3),
        (10, 10, 0, 5, 3),
        (10, 10, 5, 0, 7),
        (100, 5, 5, 5, 7),
    ]  # last: outside
    ann, root = write_coco(tmp_path, [{"boxes": boxes}, {"boxes": [(2, 60, 4, 4, 3)]}])
    with pytest.warns(UserWarning) as record:
        dataset = CocoDetection(ann, root)
    messages = [str(w.message) for w in record if "degenerate" in str(w.message)]
    assert len(messages) == 1
    assert "dropped 4 degenerate boxes" in messages[0] and str(ann) in messages[0]
    assert "annotations[1] (id 2)" in messages[0]
    assert dataset[0][1]["boxes"].tolist() == [[1.0, 1.0, 6.0, 6.0]]
    assert dataset[1][1]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("kind", ["gray", "gray16", "rgba"])
def test_grayscale_16_bit_and_alpha_become_3_channels(tmp_path, kind):
    ann, root = write_coco(tmp_path, [{"kind": kind, "boxes": [(1, 1, 5, 5, 3)]}])
    image, _ = _quiet(ann, root)[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.float32
    assert image.max() <= 1.0
    if kind != "rgba":
        assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])


def test_no_json_objects_are_kept_for_workers(tmp_path):
    ann, root = write_coco(tmp_path, [{"boxes": [(1, 1, 5, 5, 3)]}] * 3)
    dataset = _quiet(ann, root)
    arrays = [v for v in vars(dataset).values() if isinstance(v, np.ndarray)]
    assert arrays and not any(v.dtype == object for v in arrays)
    assert not any(isinstance(v, (dict, list)) and len(v) > 2 for v in vars(dataset).values())
    assert dataset.ground_truth["images"]  # loaded lazily, and not pickled into workers
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._ground_truth is None and clone[0][1]["labels"].tolist() == [1]


def test_missing_width_and_height_are_read_from_the_file(tmp_path):
    ann, root = write_coco(tmp_path, [{"width": 40, "height": 30, "boxes": [(1, 1, 5, 5, 3)]}])
    data = json.loads(ann.read_text())
    del data["images"][0]["width"], data["images"][0]["height"]
    ann.write_text(json.dumps(data))
    assert _quiet(ann, root).image_sizes.tolist() == [[30, 40]]


def test_read_categories_without_the_full_parse(tmp_path):
    ann, _ = write_coco(tmp_path, [{"boxes": [(1, 1, 5, 5, 3)]}])
    assert read_categories(ann) == ([3, 7], ["scratch", "dent"])
    # A second "categories" key (nested in info) makes the scan ambiguous: full parse instead.
    edit_json(ann, info={"categories": [{"id": 1, "name": "wrong"}]})
    assert read_categories(ann) == ([3, 7], ["scratch", "dent"])


# ------------------------------------------------------------------------- bad input


def _one_line(error: Exception, *parts: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, (part, message)


def _annotation_edit(tmp_path, **changes):
    ann, root = write_coco(tmp_path, [{"boxes": [(1, 1, 5, 5, 3), (2, 2, 5, 5, 7)]}])
    data = json.loads(ann.read_text())
    for key, value in changes.items():
        if value is None:
            del data["annotations"][1][key]
        else:
            data["annotations"][1][key] = value
    ann.write_text(json.dumps(data))
    return ann, root


def test_missing_image_file(tmp_path):
    ann, root = write_coco(
        tmp_path, [{"boxes": []}, {"id": 42, "file_name": "gone.jpg", "write": False}]
    )
    dataset = _quiet(ann, root)
    with pytest.raises(ImageReadError) as info:
        dataset[1]
    _one_line(info.value, str(root / "gone.jpg"), "image id 42", "file_name", "not found")


def test_corrupt_jpeg(tmp_path):
    ann, root = write_coco(tmp_path, [{"id": 5, "file_name": "bad.jpg"}])
    truncate_file(root / "bad.jpg")
    with pytest.raises(ImageReadError) as info:
        _quiet(ann, root)[0]
    _one_line(info.value, "bad.jpg", "image id 5", "truncated")


def test_image_size_differs_from_the_json(tmp_path):
    ann, root = write_coco(tmp_path, [{"id": 9, "width": 64, "height": 48}])
    data = json.loads(ann.read_text())
    data["images"][0]["width"] = 48
    ann.write_text(json.dumps(data))
    with pytest.raises(InvalidInputError) as info:
        _quiet(ann, root)[0]
    _one_line(info.value, str(ann), "image id 9", "48x48", "64x48")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_json_without_a_required_list(tmp_path, key):
    ann, root = write_coco(tmp_path, [{"boxes": []}])
    edit_json(ann, **{key: None})
    with pytest.raises(InvalidInputError) as info:
        CocoDetection(ann, root)
    _one_line(info.value, str(ann), f"'{key}'")


def test_malformed_json(tmp_path):
    ann = tmp_path / "a.json"
    ann.write_text('{"images": [}')
    with pytest.raises(InvalidInputError) as info:
        CocoDetection(ann, tmp_path)
    _one_line(info.value, str(ann), "malformed JSON", "line 1")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"category_id": 99}, ["field 'category_id'", "no category with id 99"]),
        ({"image_id": 1234}, ["field 'image_id'", "no image with id 1234"]),
        ({"bbox": [1, 1, -3, 5]}, ["field 'bbox'", "width and height must be >= 0"]),
        ({"bbox": [1, 1, 5]}, ["field 'bbox'", "4 finite numbers"]),
        ({"bbox": [1, 1, 5, "x"]}, ["field 'bbox'", "4 finite numbers"]),
        ({"bbox": [1, 1, 5, float("nan")]}, ["field 'bbox'", "4 finite numbers"]),
        ({"bbox": None}, ["field 'bbox'", "missing"]),
        ({"category_id": None}, ["field 'category_id'", "missing"]),
    ],
)
def test_bad_annotation_names_file_record_and_field(tmp_path, changes, words):
    ann, root = _annotation_edit(tmp_path, **changes)
    with pytest.raises(InvalidInputError) as info:
        CocoDetection(ann, root)
    _one_line(info.value, str(ann), "annotations[1] (id 2)", *words)


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (
            [{"id": 1, "file_name": "a.jpg", "width": 0, "height": 5}],
            ["images[0] (id 1)", "'width'"],
        ),
        (
            [{"id": "1", "file_name": "a.jpg", "width": 5, "height": 5}],
            ["images[0] (id '1')", "'id'"],
        ),
        ([{"id": 1, "width": 5, "height": 5}], ["images[0] (id 1)", "'file_name'"]),
        (
            [{"id": 1, "file_name": "a.jpg", "width": 5, "height": 5}] * 2,
            ["images[1] (id 1)", "also used by images[0]"],
        ),
    ],
)
def test_bad_image_record(tmp_path, images, words):
    ann, root = write_coco(tmp_path, [])
    edit_json(ann, images=images)
    with pytest.raises(InvalidInputError) as info:
        CocoDetection(ann, root)
    _one_line(info.value, str(ann), *words)


def test_bad_category_record(tmp_path):
    ann, root = write_coco(
        tmp_path, [], categories=[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]
    )
    with pytest.raises(InvalidInputError) as info:
        CocoDetection(ann, root)
    _one_line(info.value, str(ann), "categories[1] (id 1)", "also used by categories[0]")


def test_uint8_images_are_the_float_images_times_255(tmp_path):
    ann, root = write_coco(tmp_path, [{"kind": "rgb"}, {"kind": "gray"}])
    as_float = _quiet(ann, root)
    as_uint8 = _quiet(ann, root, image_dtype=torch.uint8)
    rgb, gray = as_uint8[0][0], as_uint8[1][0]
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, 48, 64)
    assert gray.dtype == torch.uint8 and gray.shape == (1, 48, 64)  # expanded on the device
    for index, image in ((0, rgb), (1, gray)):
        assert torch.equal(to_float_image(image), as_float[index][0])
    # A transform that needs colour makes gray files RGB before augmenting.
    colour = build_transforms([{"name": "ToGray", "p": 1.0}], train=True)
    image, _ = _quiet(ann, root, transforms=colour, image_dtype=torch.uint8)[1]
    assert image.shape == (3, 48, 64)
