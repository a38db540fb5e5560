"""COCO-format detection dataset, indexed once into compact arrays."""

from __future__ import annotations

import json
import mmap
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset

from detection.core.coco_format import (
    raise_first,
    read_coco,
    read_json,
    record_name,
    size_mismatch,
    validate,
)
from detection.core.errors import ImageReadError, InvalidInputError
from detection.core.files import check_regular_file
from detection.core.images import MAX_PIXELS, image_size, read_image, to_tensor
from detection.data.transforms import apply_transforms, keeps_gray

Transform = Callable[..., dict[str, Any]]


def parse_categories(path: str | Path, categories: Any) -> tuple[list[int], list[str]]:
    """Validate COCO categories; return (ids sorted ascending, names in the same order)."""
    if not isinstance(categories, list) or not categories:
        raise InvalidInputError(path, "needs at least one category", field="categories")
    raise_first(validate({"images": [], "annotations": [], "categories": categories}), path)
    names_by_id = {int(category["id"]): category["name"] for category in categories}
    ids = sorted(names_by_id)
    return ids, [names_by_id[i] for i in ids]


def read_categories(path: str | Path) -> tuple[list[int], list[str]]:
    """(category ids, class names) of a COCO json, without parsing its images and annotations.

    Large files are memory-mapped and only the "categories" list is decoded; when that list
    cannot be found unambiguously the whole file is parsed.
    """
    path = check_regular_file(path)  # before the memory map: opening a FIFO blocks
    categories = _scan_categories(path)
    if categories is None:
        categories = read_coco(path)["categories"]
    return parse_categories(path, categories)


_CATEGORIES_KEY = re.compile(rb'"categories"\s*:\s*\[')


def _scan_categories(path: Path) -> list[Any] | None:
    try:
        with open(path, "rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            matches = list(_CATEGORIES_KEY.finditer(mm))
            if len(matches) != 1:
                return None  # absent or ambiguous (e.g. a nested key): parse the whole file
            start = matches[0].end() - 1
            decoder = json.JSONDecoder()
            # A category list is small; decode from a bounded window, growing if needed.
            window = 1 << 20
            while True:
                text = mm[start : start + window].decode("utf-8", errors="strict")
                try:
                    value, _ = decoder.raw_decode(text)
                    return value if isinstance(value, list) else None
                except json.JSONDecodeError:
                    if start + window >= len(mm):
                        return None
                    window *= 8
    except (OSError, ValueError):
        return None  # empty file, not mappable, not UTF-8: the full parse reports the problem


class CocoDetection(Dataset):
    """COCO detection dataset yielding (image float [3,H,W] in 0..1, target dict) for torchvision.

    The json is parsed and validated once into numpy arrays and then released, so forked
    dataloader workers share a few flat arrays instead of millions of Python objects.
    Labels are 1..K in the order of sorted category ids; 0 is the background.
    ``image_dtype=torch.uint8`` returns uint8 [C,H,W] images instead, C = 1 for grayscale
    files (4 to 12 times less to copy out of workers and to the GPU); ``to_float_image``
    makes them float [3,H,W] on the device.
    """

    def __init__(
        self,
        annotation_file: str | Path,
        image_root: str | Path,
        transforms: Transform | None = None,
        drop_images_without_annotations: bool = False,
        max_pixels: int | None = MAX_PIXELS,
        image_dtype: torch.dtype = torch.float32,
    ) -> None:
        if image_dtype not in (torch.float32, torch.uint8):
            raise ValueError(f"image_dtype must be torch.float32 or torch.uint8, not {image_dtype}")
        self.image_dtype = image_dtype
        self.annotation_file = Path(annotation_file)
        self.image_root = Path(image_root)
        self.transforms = transforms
        self.drop_images_without_annotations = drop_images_without_annotations
        self.max_pixels = max_pixels
        self._ground_truth: dict[str, Any] | None = None

        data = read_coco(self.annotation_file)
        self.category_ids, self.class_names = parse_categories(
            self.annotation_file, data["categories"]
        )
        self._label_of = {cid: label for label, cid in enumerate(self.category_ids, start=1)}
        self._index_images(data["images"])
        self._index_annotations(data["annotations"])

    # ----------------------------------------------------------------------------- indexing

    def _index_images(self, images: list[Any]) -> None:
        ids = np.empty(len(images), dtype=np.int64)
        sizes = np.empty((len(images), 2), dtype=np.int64)  # (height, width)
        names: list[str] = []
        for index, image in enumerate(images):
            image_id, name = image["id"], image["file_name"]
            record = record_name("images", index, image)
            width, height = image.get("width"), image.get("height")
            if width is None or height is None:
                # Sizes are required by COCO but often missing in hand-made files: read the header.
                try:
                    width, height = image_size(self.image_root / name)
                except ImageReadError as error:
                    raise ImageReadError(
                        self.image_root / name, error.problem, record=record, field="file_name"
                    ) from None
            ids[index] = image_id
            sizes[index] = (height, width)
            names.append(name)
        self._image_ids = ids
        self._sizes = sizes
        # Fixed-width unicode array: no per-item Python objects to copy-on-access in workers.
        self._file_names = np.array(names, dtype=np.str_) if names else np.empty(0, dtype="<U1")

    def _index_annotations(self, annotations: list[Any]) -> None:
        file = self.annotation_file
        index_of_image = {int(image_id): i for i, image_id in enumerate(self._image_ids)}
        n = len(annotations)
        # Every record passed the COCO rules in __init__: ids known, boxes 4 finite numbers.
        image_index = np.fromiter(
            (index_of_image[int(ann["image_id"])] for ann in annotations), np.int64, n
        )
        labels = np.fromiter(
            (self._label_of[int(ann["category_id"])] for ann in annotations), np.int64, n
        )
        crowd = np.fromiter((bool(ann.get("iscrowd", 0)) for ann in annotations), bool, n)
        boxes = np.array([ann["bbox"] for ann in annotations], dtype=np.float64).reshape(n, 4)

        # Crowd regions are ignored by training and scored as "don't care" by COCO evaluation.
        keep = ~crowd
        image_index, labels, boxes = image_index[keep], labels[keep], boxes[keep]
        kept_positions = np.flatnonzero(keep)
        height = self._sizes[image_index, 0].astype(np.float64)
        width = self._sizes[image_index, 1].astype(np.float64)
        x1 = np.clip(boxes[:, 0], 0.0, width)
        y1 = np.clip(boxes[:, 1], 0.0, height)
        x2 = np.clip(boxes[:, 0] + boxes[:, 2], 0.0, width)
        y2 = np.clip(boxes[:, 1] + boxes[:, 3], 0.0, height)
        valid = (x2 > x1) & (y2 > y1)
        clipped = valid & (
            (x1 != boxes[:, 0])
            | (y1 != boxes[:, 1])
            | (x2 != boxes[:, 0] + boxes[:, 2])
            | (y2 != boxes[:, 1] + boxes[:, 3])
        )
        if clipped.any():
            first = int(kept_positions[np.flatnonzero(clipped)[0]])
            warnings.warn(
                f"{file}: clipped {int(clipped.sum())} boxes reaching outside their image to it "
                "(data lint reports them as errors; fix them there to train on the boxes you "
                f"meant), the first is {record_name('annotations', first, annotations[first])}",
                stacklevel=3,
            )
        if not valid.all():
            first = int(kept_positions[np.flatnonzero(~valid)[0]])
            warnings.warn(
                f"{file}: dropped {int((~valid).sum())} degenerate boxes (width or height <= 0 "
                f"after clipping to the image), the first is {record_name('annotations', first, annotations[first])}",
                stacklevel=3,
            )
        xyxy = np.stack([x1, y1, x2, y2], axis=1)[valid].astype(np.float32)
        image_index, labels = image_index[valid], labels[valid]

        order = np.argsort(image_index, kind="stable")
        self._boxes = np.ascontiguousarray(xyxy[order])
        self._labels = np.ascontiguousarray(labels[order])
        counts = np.bincount(image_index, minlength=len(self._image_ids))
        ends = np.cumsum(counts)
        starts = ends - counts
        if self.drop_images_without_annotations:
            kept = counts > 0
            self._image_ids = self._image_ids[kept]
            self._sizes = self._sizes[kept]
            self._file_names = self._file_names[kept]
            starts, ends = starts[kept], ends[kept]
        self._starts, self._ends = starts, ends

    # ----------------------------------------------------------------------------- public API

    @property
    def num_classes(self) -> int:
        """Number of object classes K, without the background."""
        return len(self.category_ids)

    def label_to_category_id(self, label: int) -> int:
        """COCO category id of a contiguous label 1..K."""
        if not 1 <= label <= len(self.category_ids):
            raise KeyError(f"label {label} is outside 1..{len(self.category_ids)}")
        return self.category_ids[label - 1]

    def category_id_to_label(self, category_id: int) -> int:
        """Contiguous label 1..K of a COCO category id."""
        try:
            return self._label_of[category_id]
        except KeyError:
            raise KeyError(
                f"unknown category id {category_id} (known: {self.category_ids})"
            ) from None

    @property
    def image_ids(self) -> list[int]:
        """COCO image ids, in dataset order."""
        return self._image_ids.tolist()

    @property
    def image_sizes(self) -> np.ndarray:
        """(height, width) of every image from the json, shape [N, 2]."""
        return self._sizes.copy()

    def aspect_ratios(self) -> np.ndarray:
        """width / height of every image, for aspect-ratio grouped batching."""
        return self._sizes[:, 1] / self._sizes[:, 0]

    def image_path(self, index: int) -> Path:
        """Path of the image file at a dataset index."""
        return self.image_root / str(self._file_names[index])

    @property
    def transforms(self) -> Transform | None:
        """The augmentation applied to every sample; may be replaced after construction."""
        return self._transforms

    @transforms.setter
    def transforms(self, transforms: Transform | None) -> None:
        self._transforms = transforms
        # Worked out once here rather than per sample: it walks the whole pipeline.
        self._keeps_gray = transforms is None or (
            isinstance(transforms, A.BaseCompose) and keeps_gray(transforms)
        )

    @property
    def keeps_gray(self) -> bool:
        """Whether grayscale files stay 1-channel: the transforms are all channel-blind."""
        return self._keeps_gray

    @property
    def ground_truth(self) -> dict[str, Any]:
        """The whole COCO dict (crowd annotations and all images included), for evaluation.

        Read again from the file on first use, so that the dataset does not carry it into
        dataloader workers.
        """
        if self._ground_truth is None:
            self._ground_truth = read_json(self.annotation_file)  # validated in __init__
        return self._ground_truth

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_ground_truth"] = None  # spawned workers do not need it
        return state

    def __len__(self) -> int:
        return len(self._image_ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        image_id = int(self._image_ids[index])
        record = f"image id {image_id}"
        path = self.image_path(index)
        try:
            image = read_image(path, max_pixels=self.max_pixels, keep_gray=self.keeps_gray)
        except ImageReadError as error:
            raise ImageReadError(path, error.problem, record=record, field="file_name") from None
        declared = (int(self._sizes[index, 1]), int(self._sizes[index, 0]))
        problem = size_mismatch(declared, (image.shape[1], image.shape[0]), path, "decoded image")
        if problem is not None:
            raise InvalidInputError(
                self.annotation_file, problem, record=record, field="width/height"
            )
        start, end = self._starts[index], self._ends[index]
        boxes = self._boxes[start:end].copy()
        labels = self._labels[start:end].copy()
        if isinstance(self.transforms, A.Compose):
            image, boxes, labels = apply_transforms(self.transforms, image, boxes, labels)
        elif self.transforms is not None:
            out = self.transforms(image=image, bboxes=boxes, labels=labels)
            image = out["image"]
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        target = {
            "boxes": torch.from_numpy(boxes),
            "labels": torch.from_numpy(labels),
            "image_id": image_id,
        }
        return to_tensor(image, self.image_dtype), target
