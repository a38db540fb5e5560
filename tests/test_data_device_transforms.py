"""Device transforms: albumentations' brightness/contrast on float images, training batches only."""

from __future__ import annotations

import random
from types import SimpleNamespace

import albumentations as A
import numpy as np
import pytest
import torch
from coco_files import random_images, write_coco

from detection.core.errors import InvalidInputError
from detection.data.datamodule import CocoDataModule
from detection.data.device_transforms import (
    DEFAULT_DEVICE_TRANSFORMS,
    RandomBrightnessContrast,
    build_device_transforms,
)


@pytest.mark.parametrize("by_max", [True, False])
@pytest.mark.parametrize(("brightness", "contrast"), [(0.15, -0.1), (-0.2, 0.2), (0.0, 0.3)])
def test_matches_albumentations_up_to_its_8_bit_rounding(brightness, contrast, by_max):
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    fixed = {"brightness_limit": (brightness, brightness), "contrast_limit": (contrast, contrast)}
    theirs = A.RandomBrightnessContrast(**fixed, brightness_by_max=by_max, p=1.0)(image=image)
    ours = RandomBrightnessContrast(**fixed, brightness_by_max=by_max, p=1.0)(
        torch.from_numpy(image).permute(2, 0, 1).float() / 255, random.Random(0)
    )
    expected = torch.from_numpy(theirs["image"]).permute(2, 0, 1).float() / 255
    assert ours.min() >= 0.0 and ours.max() <= 1.0
    # albumentations truncates to 8 bits through a lookup table: at most one step below ours.
    difference = ours - expected
    assert difference.min() >= -1e-6 and difference.max() <= 1 / 255 + 1e-6


def test_probability_and_seed():
    image = torch.full((3, 8, 8), 0.5)
    never = build_device_transforms([{"name": "RandomBrightnessContrast", "p": 0.0}], seed=0)
    assert never([image])[0] is image
    spec = [{"name": "RandomBrightnessContrast", "brightness_limit": 0.3, "p": 0.5}]
    a, b, c = (build_device_transforms(spec, seed=s) for s in (1, 1, 2))
    out_a, out_b, out_c = (t([image] * 200) for t in (a, b, c))
    changed = [not torch.equal(x, image) for x in out_a]
    assert 60 < sum(changed) < 140  # p = 0.5, drawn per image
    assert all(torch.equal(x, y) for x, y in zip(out_a, out_b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(out_a, out_c, strict=True))
    b.set_random_seed(1)
    assert all(torch.equal(x, y) for x, y in zip(out_a, b([image] * 200), strict=True))


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ([{"name": "RandomBrightnesContrast"}], "did you mean RandomBrightnessContrast"),
        ([{"name": "HorizontalFlip"}], "geometric transforms belong in train_transforms"),
        ([{"name": "RandomBrightnessContrast", "gamma": 2}], "unexpected keyword argument 'gamma'"),
        ([{"name": "RandomBrightnessContrast", "contrast_limit": [0.3, 0.1]}], "contrast_limit"),
        ([{"name": "RandomBrightnessContrast", "p": 2}], "p must be in 0..1"),
        ([{"p": 0.5}], "'name' key"),
        ({"name": "RandomBrightnessContrast"}, "must be a list"),
    ],
)
def test_bad_spec_is_a_one_line_error(spec, words):
    with pytest.raises(InvalidInputError, match=words) as error:
        build_device_transforms(spec)
    assert "\n" not in str(error.value) and "device_transforms" in str(error.value)


def test_datamodule_jitters_training_batches_only(tmp_path):
    ann, _ = write_coco(tmp_path, random_images(4, seed=3))
    dm = CocoDataModule(train_annotations=str(ann), num_workers=0, batch_size=4)
    assert dm.hparams.device_transforms == DEFAULT_DEVICE_TRANSFORMS
    dm.setup("fit")
    torch.manual_seed(0)
    batch = next(iter(dm.train_dataloader()))
    plain = [image.float() / 255 for image in batch[0]]
    images, _ = dm.finish_batch(batch, augment=True)
    assert any(not torch.equal(x, y) for x, y in zip(images, plain, strict=True))
    assert all(x.min() >= 0 and x.max() <= 1 for x in images)

    torch.manual_seed(0)  # the stream is seeded from torch's when the loader is made
    again = next(iter(dm.train_dataloader()))
    assert all(
        torch.equal(x, y) for x, y in zip(dm.finish_batch(again, True)[0], images, strict=True)
    )

    dm.trainer = SimpleNamespace(training=False)  # validating, testing, predicting
    unchanged, _ = dm.on_after_batch_transfer(batch, 0)
    assert all(torch.equal(x, y) for x, y in zip(unchanged, plain, strict=True))

    off = CocoDataModule(train_annotations=str(ann), num_workers=0, device_transforms=None)
    assert off.device_transforms is None
    assert all(
        torch.equal(x, y)
        for x, y in zip(off.finish_batch(batch, augment=True)[0], plain, strict=True)
    )
