"""A folder of images without labels, as the data module's predict split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from detection.core.errors import InvalidInputError
from detection.core.images import IMAGE_EXTENSIONS, MAX_PIXELS, read_image, to_tensor


class ImageFolder(Dataset):
    """The image files under `folder` (recursively, hidden entries skipped, in sorted order).

    Items are ``(image [3,H,W], {"boxes": empty, "labels": empty, "image_id": i + 1,
    "file_name": path relative to the folder})``: the layout of `CocoDetection`'s, so the same
    collate and loaders serve both.

    Raises:
        InvalidInputError: `folder` is not a folder.
    """

    def __init__(
        self,
        folder: str | Path,
        max_pixels: int | None = MAX_PIXELS,
        image_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InvalidInputError(self.folder, "is not a folder", field="predict_images")
        self.file_names = sorted(
            str(path.relative_to(self.folder))
            for path in self.folder.rglob("*")
            if path.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in path.relative_to(self.folder).parts)
            and path.is_file()
        )
        self.max_pixels = max_pixels
        self.image_dtype = image_dtype
        # Read by the data module's empty-split check, as CocoDetection's.
        self.annotation_file = self.folder
        self.drop_images_without_annotations = False

    def __len__(self) -> int:
        return len(self.file_names)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        name = self.file_names[index]
        image = read_image(self.folder / name, max_pixels=self.max_pixels)
        target = {
            "boxes": torch.zeros((0, 4), dtype=torch.float32),
            "labels": torch.zeros((0,), dtype=torch.int64),
            "image_id": index + 1,
            "file_name": name,
        }
        return to_tensor(image, self.image_dtype), target
