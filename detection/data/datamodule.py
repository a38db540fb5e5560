"""LightningDataModule over COCO-format train / val / test / predict sets."""

from __future__ import annotations

import functools
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler, get_worker_info

from detection.core.coco_format import read_coco
from detection.core.errors import InvalidInputError
from detection.core.images import MAX_PIXELS, to_float_image
from detection.core.lightning_private import uses_distributed_sampler
from detection.data.coco import CocoDetection, read_categories
from detection.data.device_transforms import DEFAULT_DEVICE_TRANSFORMS, build_device_transforms
from detection.data.image_check import check_images
from detection.data.image_folder import ImageFolder
from detection.data.samplers import GroupedBatchSampler, create_aspect_ratio_groups
from detection.data.transforms import DEFAULT_TRAIN_TRANSFORMS, build_transforms

SPLITS = ("train", "val", "test", "predict")

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]


def collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> Batch:
    """Keep images and targets as lists: detection images differ in size and box count."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def _init_worker(worker_id: int, rank: int = 0) -> None:
    """Give every worker of every rank its own augmentation stream, reproducible from the seed."""
    info = get_worker_info()
    # info.seed is base_seed + worker_id, with base_seed drawn from the main process's torch
    # generator for every new iterator: it changes each epoch and follows seed_everything.
    transforms_seed, numpy_seed, python_seed = np.random.SeedSequence(
        [info.seed, rank]
    ).generate_state(3)
    transforms = getattr(info.dataset, "transforms", None)
    if hasattr(transforms, "set_random_seed"):
        # albumentations' Compose owns its generator; forked workers would all copy one state.
        transforms.set_random_seed(int(transforms_seed))
    np.random.seed(int(numpy_seed))
    random.seed(int(python_seed))


class CocoDataModule(L.LightningDataModule):
    """Datasets and loaders for COCO json + image folder pairs.

    A split's images default to the folder "images" beside its json, else the json's folder.
    ``drop_images_without_annotations`` applies to training only: evaluation keeps the
    defect-free images, where false alarms happen. Batches are ``(list of [3,H,W] images,
    list of {"boxes", "labels", "image_id"})``.

    With ``uint8_images`` (the default) the loaders carry uint8 [C,H,W] images, C = 1 for
    grayscale files: 4 to 12 times fewer bytes through worker shared memory, pinned memory
    and the host-to-device copy. ``on_after_batch_transfer`` turns them into float [3,H,W]
    in 0..1 on the device: a model under a Trainer sees float RGB images either way.

    ``train_transforms`` (albumentations, in the data workers: flips, crops, anything that
    moves boxes) and ``device_transforms`` (pixel-value jitter on the device, on training
    batches; see detection.data.device_transforms) are YAML-style lists. Code that iterates
    the loaders itself calls ``datamodule.finish_batch(batch, augment=is_training_batch)``
    after moving each batch, or sets ``uint8_images=False`` and ``device_transforms=None``.

    ``setup`` fails before the work on an empty split and, with ``check_images`` (the default),
    on any image of its splits that is not a readable regular file of the size its json says
    (headers only, in parallel; see detection.data.image_check).

    Args:
        {split}_annotations, {split}_images: a split's COCO json and image folder (train, val,
            test, predict); the predict split may be a folder alone (unlabelled images, sorted).
        batch_size, eval_batch_size: images per training / evaluation batch (eval default:
            batch_size). num_workers, pin_memory, persistent_workers: as DataLoader's.
        train_transforms, eval_transforms, device_transforms, min_visibility: see above.
        aspect_ratio_group_factor: training batches group images by aspect ratio into 2k + 1
            bins (torchvision's references); -1 turns grouping off.
        max_pixels: refuse larger images before decoding (None: no limit).

    Raises:
        InvalidInputError: a batch size under 1, negative workers, images without their json,
            a bad transform spec; later (properties, setup) a missing or malformed json, splits
            with other categories, an empty split or an unreadable image.
    """

    def __init__(
        self,
        train_annotations: str | None = None,
        train_images: str | None = None,
        val_annotations: str | None = None,
        val_images: str | None = None,
        test_annotations: str | None = None,
        test_images: str | None = None,
        predict_annotations: str | None = None,
        predict_images: str | None = None,
        batch_size: int = 2,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        train_transforms: list[dict[str, Any]] | None = DEFAULT_TRAIN_TRANSFORMS,
        eval_transforms: list[dict[str, Any]] | None = None,
        device_transforms: list[dict[str, Any]] | None = DEFAULT_DEVICE_TRANSFORMS,
        min_visibility: float = 0.0,
        aspect_ratio_group_factor: int = 3,
        drop_images_without_annotations: bool = False,
        max_pixels: int | None = MAX_PIXELS,
        uint8_images: bool = True,
        check_images: bool = True,
    ) -> None:
        """Describe the splits; nothing is read until a property or setup() needs it."""
        super().__init__()
        self.save_hyperparameters()
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise InvalidInputError(None, "must be at least 1", field="batch_size")
        if num_workers < 0:
            raise InvalidInputError(None, "must be 0 or more", field="num_workers")
        self._annotations: dict[str, Path | None] = {}
        self._images: dict[str, Path | None] = {}
        for split, ann_file, images in (
            ("train", train_annotations, train_images),
            ("val", val_annotations, val_images),
            ("test", test_annotations, test_images),
            ("predict", predict_annotations, predict_images),
        ):
            if ann_file is None and images is not None and split != "predict":
                raise InvalidInputError(
                    None,
                    f"{split}_images is set but {split}_annotations is not",
                    field=f"{split}_annotations",
                )
            self._annotations[split] = Path(ann_file) if ann_file is not None else None
            self._images[split] = _default_image_root(Path(ann_file), images) if ann_file else None
        if predict_annotations is None and predict_images is not None:
            self._images["predict"] = Path(predict_images)  # a folder of unlabelled images
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.aspect_ratio_group_factor = aspect_ratio_group_factor
        self.drop_images_without_annotations = drop_images_without_annotations
        self.max_pixels = max_pixels
        self.check_images = check_images
        self._checked: set[str] = set()
        self.uint8_images = uint8_images
        # Built now so that a bad transform spec fails when the config is read, not mid-run.
        self.train_transforms = build_transforms(
            train_transforms, train=True, min_visibility=min_visibility
        )
        self.eval_transforms = build_transforms(
            eval_transforms, train=False, min_visibility=min_visibility
        )
        self.device_transforms = build_device_transforms(device_transforms)
        self.datasets: dict[str, CocoDetection] = {}
        self._categories: tuple[list[int], list[str], Path] | None = None

    # ----------------------------------------------------------------------------- categories

    def _read_categories(self) -> tuple[list[int], list[str], Path]:
        if self._categories is None:
            for split in SPLITS:
                path = self._annotations[split]
                if path is not None:
                    ids, names = read_categories(path)
                    self._categories = (ids, names, path)
                    break
            else:
                raise InvalidInputError(
                    None, "no annotation file is configured", field="train_annotations"
                )
        return self._categories

    @property
    def category_ids(self) -> list[int]:
        """COCO category ids in label order (label i+1 is category_ids[i]); read before setup()."""
        return list(self._read_categories()[0])

    @property
    def class_names(self) -> list[str]:
        """Class names in label order; read before setup() from the first configured json."""
        return list(self._read_categories()[1])

    @property
    def num_classes(self) -> int:
        """Number of object classes K, without the background."""
        return len(self._read_categories()[0])

    # ----------------------------------------------------------------------------- datasets

    def setup(self, stage: str | None = None) -> None:
        """Index the splits the stage needs (fit: train and val; validate; test; predict)."""
        needed = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
            None: SPLITS,
        }[stage]
        for split in needed:
            if self._images[split] is not None and split not in self.datasets:
                self.datasets[split] = self._build_dataset(split)
        if stage == "fit" and "train" not in self.datasets:
            raise InvalidInputError(None, "fit needs a training set", field="train_annotations")
        for split in needed:
            if split in self.datasets and split not in self._checked:
                self._check_split(split)

    def _check_split(self, split: str) -> None:
        """Fail before the work: an empty split, or (with check_images) any unreadable image."""
        dataset = self.datasets[split]
        if len(dataset) == 0:
            kept = " with annotations" if dataset.drop_images_without_annotations else ""
            raise InvalidInputError(dataset.annotation_file, f"has no images{kept}", field="images")
        if self.check_images and isinstance(dataset, CocoDetection):
            trainer = self.trainer
            finished = check_images(
                dataset,
                max_pixels=self.max_pixels,
                stop=lambda: trainer is not None and trainer.received_sigterm,
            )
            if not finished:
                raise SIGTERMException
        self._checked.add(split)

    def _build_dataset(self, split: str) -> CocoDetection | ImageFolder:
        path = self._annotations[split]
        images = self._images[split]
        if path is None and images is not None:
            dtype = torch.uint8 if self.uint8_images else torch.float32
            return ImageFolder(images, max_pixels=self.max_pixels, image_dtype=dtype)
        if path is None or images is None:
            raise InvalidInputError(
                None, f"no {split} annotation file is configured", field=f"{split}_annotations"
            )
        dataset = CocoDetection(
            path,
            images,
            transforms=self.train_transforms if split == "train" else self.eval_transforms,
            drop_images_without_annotations=self.drop_images_without_annotations
            and split == "train",
            max_pixels=self.max_pixels,
            image_dtype=torch.uint8 if self.uint8_images else torch.float32,
        )
        ids, names, reference = self._read_categories()
        if dataset.category_ids != ids or dataset.class_names != names:
            # Labels are positions in the sorted category list: another list means other labels.
            raise InvalidInputError(
                path,
                f"categories {list(zip(dataset.category_ids, dataset.class_names, strict=True))} differ "
                f"from those of {reference} {list(zip(ids, names, strict=True))}",
                field="categories",
            )
        return dataset

    def _dataset(self, split: str) -> CocoDetection | ImageFolder:
        if split not in self.datasets:
            self.datasets[split] = self._build_dataset(split)
        return self.datasets[split]

    def ground_truth(self, split: str = "val") -> dict[str, Any]:
        """The COCO dict of a split (crowd annotations included), for evaluation."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
        if split in self.datasets:
            return self.datasets[split].ground_truth
        path = self._annotations[split]
        if path is None:
            raise InvalidInputError(
                None, f"no {split} annotation file is configured", field=f"{split}_annotations"
            )
        return read_coco(path)

    # ----------------------------------------------------------------------------- loaders

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Under a Trainer: finish_batch, with the device transforms on training batches."""
        training = self.trainer is not None and bool(self.trainer.training)
        return self.finish_batch(batch, augment=training)

    def finish_batch(self, batch: Any, augment: bool = False) -> Any:
        """What a batch needs once on the device: uint8 images to float RGB in 0..1 and, with
        ``augment`` (training batches), the device transforms. Loops without a Trainer call it.
        """
        if isinstance(batch, (tuple, list)) and len(batch) == 2 and isinstance(batch[0], list):
            images, targets = batch
            images = [to_float_image(image) for image in images]
            if augment and self.device_transforms is not None:
                images = self.device_transforms(images)
            return images, targets
        return batch

    def train_dataloader(self) -> DataLoader:
        """Shuffled, aspect-ratio grouped batches; sharded across ranks under DDP."""
        dataset = self._dataset("train")
        rank = self._rank()
        # Augmentation in this process (the device transforms, and the dataset's without
        # workers) draws from streams seeded from torch's (seed_everything), one per rank.
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        dataset_seed, device_seed = np.random.SeedSequence([seed, rank]).generate_state(2)
        if self.num_workers == 0 and dataset.transforms is not None:
            dataset.transforms.set_random_seed(int(dataset_seed))
        if self.device_transforms is not None:
            self.device_transforms.set_random_seed(int(device_seed))
        sampler = self._train_sampler(dataset)
        if self.aspect_ratio_group_factor >= 0:
            group_ids = create_aspect_ratio_groups(
                dataset.aspect_ratios(), k=self.aspect_ratio_group_factor
            )
            batch_sampler = GroupedBatchSampler(sampler, group_ids, self.batch_size)
            return self._loader(dataset, batch_sampler=batch_sampler, rank=rank)
        return self._loader(dataset, sampler=sampler, batch_size=self.batch_size, rank=rank)

    def val_dataloader(self) -> DataLoader:
        """Validation images in file order."""
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test images in file order."""
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        """Prediction images in file order: a json's, or a folder's (sorted by path)."""
        return self._eval_loader("predict")

    def _eval_loader(self, split: str) -> DataLoader:
        dataset = self._dataset(split)
        return self._loader(
            dataset, batch_size=self.eval_batch_size, shuffle=False, rank=self._rank()
        )

    def _loader(self, dataset: CocoDetection, *, rank: int, **kwargs: Any) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset,
            num_workers=workers,
            collate_fn=collate,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=functools.partial(_init_worker, rank=rank) if workers > 0 else None,
            **kwargs,
        )

    def _rank(self) -> int:
        if self.trainer is not None:
            return int(self.trainer.global_rank)
        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    def _train_sampler(self, dataset: CocoDetection) -> Sampler[int]:
        """A RandomSampler, or our own DistributedSampler when nobody else will shard.

        Under a Trainer with use_distributed_sampler=True (the default) Lightning replaces the
        RandomSampler with a shuffling DistributedSampler, re-creating GroupedBatchSampler
        around it, and calls set_epoch on it. With use_distributed_sampler=False, or under
        torch.distributed without Lightning, the shards are built here.
        """
        trainer = self.trainer
        if trainer is not None:
            world_size, rank = int(trainer.world_size), int(trainer.global_rank)
            lightning_shards = uses_distributed_sampler(trainer)
        elif dist.is_available() and dist.is_initialized():
            world_size, rank, lightning_shards = dist.get_world_size(), dist.get_rank(), False
        else:
            world_size, rank, lightning_shards = 1, 0, False
        if world_size > 1 and not lightning_shards:
            # Every rank must draw the same permutation; Lightning uses the same seed.
            seed = int(os.environ.get("PL_GLOBAL_SEED", 0))
            return DistributedSampler(
                dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed
            )
        return RandomSampler(dataset)


def _default_image_root(annotations: Path, images: str | None) -> Path:
    if images is not None:
        return Path(images)
    beside = annotations.parent / "images"
    return beside if beside.is_dir() else annotations.parent
