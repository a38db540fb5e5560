"""Photometric transforms that run on the device, on float images, after the batch transfer.

Pixel-value jitter needs no box bookkeeping, so it can wait until the batch is on the GPU,
where it costs microseconds; in a data worker it costs a full pass over every image, a
fifth of decoding a 640x640 JPEG. Declared in YAML like the albumentations pipelines:

    device_transforms:
      - name: RandomBrightnessContrast
        brightness_limit: 0.2
        contrast_limit: 0.2
        p: 0.5

They apply to training batches only, never to evaluation.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch

from detection.core.errors import InvalidInputError
from detection.data.transforms import did_you_mean, spec_entries, split_entry

DEFAULT_DEVICE_TRANSFORMS: list[dict[str, Any]] = [
    {"name": "RandomBrightnessContrast", "brightness_limit": 0.2, "contrast_limit": 0.2, "p": 0.5},
]


class RandomBrightnessContrast:
    """albumentations' RandomBrightnessContrast for float images in 0..1.

    With probability ``p``: ``x * alpha + beta`` clipped to 0..1, alpha = 1 + U(contrast_limit),
    beta = U(brightness_limit), times the image's mean when ``brightness_by_max`` is False.
    The same parameters and formula as albumentations 2.0.8, without its rounding to 8 bits.
    A limit is a number L (meaning -L..L) or a [low, high] pair.
    """

    def __init__(
        self,
        brightness_limit: float | Sequence[float] = 0.2,
        contrast_limit: float | Sequence[float] = 0.2,
        brightness_by_max: bool = True,
        p: float = 0.5,
    ) -> None:
        self.brightness_limit = _symmetric_range(brightness_limit, "brightness_limit")
        self.contrast_limit = _symmetric_range(contrast_limit, "contrast_limit")
        self.brightness_by_max = bool(brightness_by_max)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in 0..1, got {p}")
        self.p = float(p)

    def __call__(self, image: torch.Tensor, rng: random.Random) -> torch.Tensor:
        if self.p <= 0.0 or (self.p < 1.0 and rng.random() >= self.p):
            return image
        alpha = 1.0 + rng.uniform(*self.contrast_limit)
        beta: float | torch.Tensor = rng.uniform(*self.brightness_limit)
        if not self.brightness_by_max:
            beta = beta * image.mean()  # a tensor: no host sync on the GPU
        return image.mul(alpha).add_(beta).clamp_(0.0, 1.0)

    def __repr__(self) -> str:
        return (
            f"RandomBrightnessContrast(brightness_limit={self.brightness_limit}, "
            f"contrast_limit={self.contrast_limit}, brightness_by_max={self.brightness_by_max}, "
            f"p={self.p})"
        )


DEVICE_TRANSFORMS: dict[str, type] = {"RandomBrightnessContrast": RandomBrightnessContrast}


class DeviceTransforms:
    """A sequence of device transforms with its own random stream (seeded per rank and epoch)."""

    def __init__(self, transforms: list[Any], seed: int | None = None) -> None:
        self.transforms = transforms
        self.rng = random.Random(seed)

    def set_random_seed(self, seed: int) -> None:
        """Restart the random stream, as albumentations' Compose.set_random_seed does."""
        self.rng.seed(seed)

    def __call__(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Transform each float [3,H,W] image in 0..1; images are drawn for independently."""
        out = []
        for image in images:
            for transform in self.transforms:
                image = transform(image, self.rng)
            out.append(image)
        return out

    def __repr__(self) -> str:
        return f"DeviceTransforms({self.transforms})"


def build_device_transforms(
    spec: list[dict[str, Any]] | None, seed: int | None = None
) -> DeviceTransforms | None:
    """DeviceTransforms from a YAML-style list of {name: ..., **arguments}; None for none."""
    if not spec:
        return None
    transforms = []
    for i, entry in enumerate(spec_entries(spec, "device_transforms")):
        where = f"device_transforms[{i}]"
        name, kwargs = split_entry(entry, where)
        cls = DEVICE_TRANSFORMS.get(name) if isinstance(name, str) else None
        if cls is None:
            raise InvalidInputError(None, _unknown_name_message(name), record=where, field="name")
        try:
            transforms.append(cls(**kwargs))
        except (TypeError, ValueError) as error:
            raise InvalidInputError(None, f"{name}: {error}", record=where) from None
    return DeviceTransforms(transforms, seed)


def _unknown_name_message(name: Any) -> str:
    return (
        f"unknown device transform {name!r}; known: {', '.join(DEVICE_TRANSFORMS)}"
        f"{did_you_mean(name, DEVICE_TRANSFORMS)}"
        "; geometric transforms belong in train_transforms (albumentations)"
    )


def _symmetric_range(value: Any, field: str) -> tuple[float, float]:
    numbers = (int, float)
    if isinstance(value, numbers) and not isinstance(value, bool):
        return (-abs(float(value)), abs(float(value)))
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, numbers) and not isinstance(v, bool) for v in value)
        and value[0] <= value[1]
    ):
        return (float(value[0]), float(value[1]))
    raise ValueError(f"{field} must be a number L (-L..L) or a [low, high] pair, got {value!r}")
