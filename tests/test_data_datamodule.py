"""CocoDataModule: categories before setup, batch structure, workers, Trainer integration."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
from coco_files import random_images, truncate_file, write_coco

from detection.core.errors import ImageReadError, InvalidInputError
from detection.data.datamodule import CocoDataModule
from detection.data.transforms import DEFAULT_TRAIN_TRANSFORMS

SIZES = ((64, 48), (48, 64))


@pytest.fixture
def splits(tmp_path):
    train = write_coco(tmp_path / "train", random_images(8, sizes=SIZES, seed=1))
    specs = random_images(4, sizes=SIZES, seed=2)
    specs[0]["crowd"] = [(1, 1, 8, 8, 3)]
    val = write_coco(tmp_path / "val", specs)
    return train, val


def _dm(splits, **kwargs):
    (train_ann, train_root), (val_ann, val_root) = splits
    args = dict(
        train_annotations=str(train_ann),
        train_images=str(train_root),
        val_annotations=str(val_ann),
        val_images=str(val_root),
        batch_size=3,
        num_workers=0,
    )
    return CocoDataModule(**{**args, **kwargs})


def test_categories_are_known_before_setup(splits):
    dm = _dm(splits)
    assert dm.class_names == ["scratch", "dent"]
    assert dm.category_ids == [3, 7] and dm.num_classes == 2
    assert dm.datasets == {}  # nothing indexed yet
    val_only = CocoDataModule(val_annotations=str(splits[1][0]))
    assert val_only.num_classes == 2
    assert dm.hparams.batch_size == 3 and dm.hparams.train_transforms == DEFAULT_TRAIN_TRANSFORMS


def test_images_default_to_the_folder_beside_the_json(splits):
    dm = CocoDataModule(train_annotations=str(splits[0][0]), num_workers=0)
    dm.setup("fit")
    assert dm.datasets["train"].image_root == splits[0][1]


def test_train_batches_are_lists_of_images_and_targets(splits):
    dm = _dm(splits)
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 3  # 8 images in batches of 3
    for batch in batches:
        assert all(image.dtype == torch.uint8 for image in batch[0])  # a quarter of the bytes
        images, targets = dm.on_after_batch_transfer(batch, 0)  # as the Trainer does
        assert isinstance(images, list) and isinstance(targets, list)
        assert len(images) == len(targets) <= 3
        for image, target, raw in zip(images, targets, batch[0], strict=True):
            assert image.dtype == torch.float32 and image.ndim == 3 and image.shape[0] == 3
            assert image.is_contiguous() and torch.equal(image, raw.float() / 255)
            assert target["boxes"].dtype == torch.float32 and target["boxes"].shape[1] == 4
            assert target["labels"].dtype == torch.int64
            assert len(target["boxes"]) == len(target["labels"])
            assert isinstance(target["image_id"], int)
            if len(target["boxes"]):
                h, w = image.shape[1:]
                boxes = target["boxes"]
                assert (boxes[:, 0] < boxes[:, 2]).all() and (boxes[:, 1] < boxes[:, 3]).all()
                assert (boxes >= 0).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
                assert set(target["labels"].tolist()) <= {1, 2}
        # Aspect-ratio grouping: full batches share one image shape here.
        if len(images) == 3:
            assert len({tuple(i.shape) for i in images}) == 1


def test_val_loader_and_ground_truth(splits):
    dm = _dm(splits, eval_batch_size=2, uint8_images=False)
    dm.setup("fit")
    images, targets = next(iter(dm.val_dataloader()))
    assert len(images) == 2 and targets[0]["image_id"] == 1
    assert images[0].dtype == torch.float32 and 0 <= images[0].min() and images[0].max() <= 1
    gt = dm.ground_truth("val")
    assert any(a["iscrowd"] for a in gt["annotations"])
    assert CocoDataModule(val_annotations=str(splits[1][0])).ground_truth("val") == gt


def test_different_categories_between_splits_are_refused(splits):
    (train_ann, _), (val_ann, _) = splits
    data = json.loads(val_ann.read_text())
    data["categories"][0]["name"] = "renamed"
    val_ann.write_text(json.dumps(data))
    dm = _dm(splits)
    with pytest.raises(InvalidInputError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(val_ann) in message and str(train_ann) in message and "categories" in message
    assert "\n" not in message


def test_bad_arguments_fail_at_construction(splits):
    with pytest.raises(InvalidInputError, match="HorizonalFlip"):
        _dm(splits, train_transforms=[{"name": "HorizonalFlip"}])
    with pytest.raises(InvalidInputError, match="moves pixels"):
        _dm(splits, eval_transforms=[{"name": "RandomScale"}])
    with pytest.raises(InvalidInputError, match="test_annotations"):
        CocoDataModule(test_images="somewhere")


def test_workers_augment_independently_and_report_bad_images(tmp_path):
    # Identical images: with one shared random state, both workers would return equal tensors.
    specs = [{"seed": 0, "boxes": [(4, 4, 20, 20, 3)]} for _ in range(4)]
    ann, root = write_coco(tmp_path, specs)
    transforms = [
        {"name": "RandomBrightnessContrast", "p": 1.0},
        {"name": "Affine", "scale": [0.5, 1.5], "p": 1.0},
    ]
    dm = CocoDataModule(
        train_annotations=str(ann),
        batch_size=1,
        num_workers=2,
        persistent_workers=False,
        train_transforms=transforms,
        aspect_ratio_group_factor=-1,
    )
    dm.setup("fit")
    images = [batch[0][0] for batch in dm.train_dataloader()]
    assert len(images) == 4
    assert not torch.equal(images[0], images[1])  # consecutive batches come from different workers

    truncate_file(root / "002.jpg")
    with pytest.raises(ImageReadError, match="image id 2"):
        list(dm.train_dataloader())


class _TinyModel(L.LightningModule):
    """Counts what the Trainer delivers; enough to exercise the loaders under Lightning."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[int] = []

    def training_step(self, batch, batch_idx):
        images, targets = batch
        assert isinstance(images, list) and isinstance(targets[0], dict)
        assert all(image.dtype == torch.float32 for image in images)  # converted after transfer
        self.seen.extend(t["image_id"] for t in targets)
        return self.weight * sum(image.mean() for image in images)

    def validation_step(self, batch, batch_idx):
        images, targets = batch
        assert all(image.dtype == torch.float32 for image in images)
        self.seen.extend(-t["image_id"] for t in targets)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_under_a_trainer(splits):
    dm = _dm(splits)
    model = _TinyModel()
    jittered: list[int] = []
    device_transforms = dm.device_transforms

    class Spy:
        set_random_seed = device_transforms.set_random_seed

        def __call__(self, images):
            jittered.append(len(images))
            return device_transforms(images)

    dm.device_transforms = Spy()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    train_seen = [i for i in model.seen if i > 0]
    assert sorted(train_seen) == sorted(list(range(1, 9)) * 2)
    assert sorted(-i for i in model.seen if i < 0) == sorted(list(range(1, 5)) * 2)
    assert sum(jittered) == 16  # the device transforms saw every training image, no val image


def test_gray_files_travel_as_one_channel_and_arrive_as_rgb(tmp_path):
    ann, _ = write_coco(tmp_path, [{"kind": "gray", "boxes": [(1, 1, 9, 9, 3)]}] * 2)
    dm = CocoDataModule(train_annotations=str(ann), num_workers=0, batch_size=2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert [tuple(image.shape) for image in batch[0]] == [(1, 48, 64)] * 2
    images, _ = dm.on_after_batch_transfer(batch, 0)
    for image in images:
        assert image.shape == (3, 48, 64) and image.dtype == torch.float32
        assert torch.equal(image[0], image[2])
