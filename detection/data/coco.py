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

from detection.data.transforms import apply_transforms, keeps_gray
from detection.errors import ImageReadError, InvalidInputError
from detection.images import MAX_PIXELS, image_size, read_image, to_tensor

REQUIRED_KEYS = ("images", "annotations", "categories")

Transform = Callable[..., dict[str, Any]]


def load_coco_json(path: str | Path) -> dict[str, Any]:
    """Read a COCO json and check that it has the images, annotations and categories lists."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            data = json.load(file)
    except FileNotFoundError:
        raise InvalidInputError(path, "annotation file not found") from None
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            path, f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except (UnicodeDecodeError, OSError) as error:
        raise InvalidInputError(path, f"cannot read the annotation file ({error})") from None
    if not isinstance(data, dict):
        raise InvalidInputError(path, f"top level must be an object, not {type(data).__name__}")
    for key in REQUIRED_KEYS:
        if key not in data:
            raise InvalidInputError(path, f"missing the '{key}' list", field=key)
        if not isinstance(data[key], list):
            raise InvalidInputError(
                path, f"must be a list, not {type(data[key]).__name__}", field=key
            )
    return data


def _record_id(path: str | Path, record: Any, where: str) -> int:
    """The integer "id" of a json record (an image, a category), or a one-line error."""
    if not isinstance(record, dict):
        raise InvalidInputError(path, "must be an object", record=where)
    record_id = record.get("id")
    if not _is_int(record_id):
        raise InvalidInputError(path, "must be an integer", record=where, field="id")
    return record_id


def parse_categories(path: str | Path, categories: Any) -> tuple[list[int], list[str]]:
    """Validate COCO categories; return (ids sorted ascending, names in the same order)."""
    if not isinstance(categories, list) or not categories:
        raise InvalidInputError(path, "needs at least one category", field="categories")
    names_by_id: dict[int, str] = {}
    for index, category in enumerate(categories):
        category_id = _record_id(path, category, f"category #{index}")
        record = f"category id {category_id}"
        name = category.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidInputError(path, "must be a non-empty string", record=record, field="name")
        if category_id in names_by_id:
            raise InvalidInputError(path, "duplicate category id", record=record, field="id")
        names_by_id[category_id] = name
    ids = sorted(names_by_id)
    return ids, [names_by_id[i] for i in ids]


def read_categories(path: str | Path) -> tuple[list[int], list[str]]:
    """(category ids, class names) of a COCO json, without parsing its images and annotations.

    Large files are memory-mapped and only the "categories" list is decoded; when that list
    cannot be found unambiguously the whole file is parsed.
    """
    path = Path(path)
    categories = _scan_categories(path)
    if categories is None:
        categories = load_coco_json(path)["categories"]
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ann_record(annotation: Any, index: int) -> str:
    if isinstance(annotation, dict) and _is_int(annotation.get("id")):
        return f"annotation id {annotation['id']}"
    return f"annotation #{index}"


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

        data = load_coco_json(self.annotation_file)
        self.category_ids, self.class_names = parse_categories(
            self.annotation_file, data["categories"]
        )
        self._label_of = {cid: label for label, cid in enumerate(self.category_ids, start=1)}
        self._index_images(data["images"])
        self._index_annotations(data["annotations"])

    # ----------------------------------------------------------------------------- indexing

    def _index_images(self, images: list[Any]) -> None:
        file = self.annotation_file
        ids = np.empty(len(images), dtype=np.int64)
        sizes = np.empty((len(images), 2), dtype=np.int64)  # (height, width)
        names: list[str] = []
        for index, image in enumerate(images):
            image_id = _record_id(file, image, f"image #{index}")
            record = f"image id {image_id}"
            name = image.get("file_name")
            if not isinstance(name, str) or not name:
                raise InvalidInputError(
                    file, "must be a non-empty string", record=record, field="file_name"
                )
            width, height = image.get("width"), image.get("height")
            if width is None or height is None:
                # Sizes are required by COCO but often missing in hand-made files: read the header.
                try:
                    width, height = image_size(self.image_root / name)
                except ImageReadError as error:
                    raise ImageReadError(
                        self.image_root / name, error.problem, record=record, field="file_name"
                    ) from None
            for field, value in (("width", width), ("height", height)):
                if not _is_int(value) or value <= 0:
                    raise InvalidInputError(
                        file,
                        f"must be a positive integer, got {value!r}",
                        record=record,
                        field=field,
                    )
            ids[index] = image_id
            sizes[index] = (height, width)
            names.append(name)
        unique, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():
            duplicate = int(unique[np.argmax(counts > 1)])
            raise InvalidInputError(
                file, "duplicate image id", record=f"image id {duplicate}", field="id"
            )
        self._image_ids = ids
        self._sizes = sizes
        # Fixed-width unicode array: no per-item Python objects to copy-on-access in workers.
        self._file_names = np.array(names, dtype=np.str_) if names else np.empty(0, dtype="<U1")

    def _index_annotations(self, annotations: list[Any]) -> None:
        file = self.annotation_file
        index_of_image = {int(image_id): i for i, image_id in enumerate(self._image_ids)}
        n = len(annotations)
        image_index = np.empty(n, dtype=np.int64)
        labels = np.empty(n, dtype=np.int64)
        crowd = np.zeros(n, dtype=bool)
        xywh: list[Any] = [None] * n
        for k, ann in enumerate(annotations):
            try:
                image_index[k] = index_of_image[ann["image_id"]]
                labels[k] = self._label_of[ann["category_id"]]
                bbox = ann["bbox"]
                if len(bbox) != 4:
                    raise ValueError
                xywh[k] = bbox
                crowd[k] = bool(ann.get("iscrowd", 0))
            except (KeyError, TypeError, ValueError):
                self._raise_bad_annotation(ann, k, index_of_image)
        try:
            boxes = np.array(xywh, dtype=np.float64).reshape(n, 4)
        except (TypeError, ValueError):
            for k, ann in enumerate(annotations):
                try:
                    np.array(ann["bbox"], dtype=np.float64)
                except (TypeError, ValueError):
                    raise InvalidInputError(
                        file,
                        "must be 4 numbers [x, y, width, height]",
                        record=_ann_record(ann, k),
                        field="bbox",
                    ) from None
            raise
        bad = ~np.isfinite(boxes).all(axis=1)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise InvalidInputError(
                file,
                f"has a non-finite value {xywh[k]}",
                record=_ann_record(annotations[k], k),
                field="bbox",
            )
        negative = (boxes[:, 2] < 0) | (boxes[:, 3] < 0)
        if negative.any():
            k = int(np.flatnonzero(negative)[0])
            raise InvalidInputError(
                file,
                f"has a negative width or height {xywh[k]} (COCO boxes are [x, y, width, height])",
                record=_ann_record(annotations[k], k),
                field="bbox",
            )

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
        if not valid.all():
            first = int(kept_positions[np.flatnonzero(~valid)[0]])
            warnings.warn(
                f"{file}: dropped {int((~valid).sum())} degenerate boxes (width or height <= 0 "
                f"after clipping to the image), the first is {_ann_record(annotations[first], first)}",
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

    def _raise_bad_annotation(self, ann: Any, k: int, index_of_image: dict[int, int]) -> None:
        file, record = self.annotation_file, _ann_record(ann, k)
        if not isinstance(ann, dict):
            raise InvalidInputError(file, "must be an object", record=record)
        for field in ("image_id", "category_id", "bbox"):
            if field not in ann:
                raise InvalidInputError(file, "is missing", record=record, field=field)
        try:
            index_of_image[ann["image_id"]]
        except (KeyError, TypeError):
            raise InvalidInputError(
                file,
                f"refers to unknown image id {ann['image_id']!r}",
                record=record,
                field="image_id",
            ) from None
        if ann["category_id"] not in self._label_of:
            raise InvalidInputError(
                file,
                f"refers to unknown category id {ann['category_id']!r} (known: {self.category_ids})",
                record=record,
                field="category_id",
            )
        raise InvalidInputError(
            file,
            f"must be 4 numbers [x, y, width, height], got {ann['bbox']!r}",
            record=record,
            field="bbox",
        )

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
            self._ground_truth = load_coco_json(self.annotation_file)
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
        height, width = int(self._sizes[index, 0]), int(self._sizes[index, 1])
        if image.shape[:2] != (height, width):
            raise InvalidInputError(
                self.annotation_file,
                f"the json says {width}x{height} but {path} decodes to {image.shape[1]}x{image.shape[0]}",
                record=record,
                field="width/height",
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
