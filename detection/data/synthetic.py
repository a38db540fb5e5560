"""Deterministic synthetic defect datasets: textured metal surfaces with drawn defects, in COCO format."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from detection.core.errors import OutputError
from detection.core.run_folder import output_folder, write_atomic

DEFAULT_CLASSES = ("scratch", "spot", "crack", "dent")
DEFAULT_SPLITS = {"train": 0.7, "val": 0.15, "test": 0.15}
MIN_DEFECT_SIZE = 6  # pixels: the smallest defect drawn, and so the smallest image side

# A defect is drawn into a local patch: an alpha mask (where it is) and an RGB layer (what it
# looks like) or, for dents, a signed shading map added to the surface.
Patch = tuple[np.ndarray, np.ndarray, bool]  # (alpha HxW float32, layer HxWx3 float32, additive)


def _surface(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Brushed-metal texture with a gentle illumination gradient, float32 RGB 0..255."""
    horizontal = rng.random() < 0.5
    h, w = (height, width) if horizontal else (width, height)
    # Motion-blurred noise along one axis gives the brushed streaks.
    streak = max(3, w // 6)
    noise = rng.normal(0.0, 1.0, size=(h, w)).astype(np.float32)
    brushed = cv2.blur(noise, (streak, 1), borderType=cv2.BORDER_REFLECT)
    brushed *= 8.0 / max(float(brushed.std()), 1e-6)
    if not horizontal:
        brushed = np.ascontiguousarray(brushed.T)
    # Low-frequency blotches: a coarse random grid smoothly upsampled.
    coarse = rng.normal(0.0, 5.0, size=(4, 4)).astype(np.float32)
    blotches = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0.0, 3.0, size=(height, width)).astype(np.float32)
    # Illumination: a random linear ramp of up to +-20 grey levels across the image.
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (xs / max(width - 1, 1) - 0.5) * math.cos(angle) + (
        ys / max(height - 1, 1) - 0.5
    ) * math.sin(angle)
    light = ramp * rng.uniform(15.0, 40.0)
    base = rng.uniform(120.0, 165.0)
    grey = base + brushed + blotches + fine + light
    # A faint per-image tint keeps images RGB-looking rather than pure grey.
    tint = 1.0 + rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
    return grey[:, :, None] * tint[None, None, :]


def _solid(alpha: np.ndarray, rgb: Sequence[float]) -> np.ndarray:
    layer = np.empty(alpha.shape + (3,), np.float32)
    layer[:] = np.asarray(rgb, np.float32)
    return layer


def _scratch(rng: np.random.Generator, size: int, thick: int) -> Patch:
    """A thin, long, slightly bent line, either darker or brighter than the surface."""
    # Shorter than ~6 widths it reads as a pill-shaped spot, not a scratch.
    size = max(size, 6 * thick)
    pad = thick + 2
    n = size + 2 * pad
    canvas = np.zeros((n, n), np.uint8)
    angle = rng.uniform(0, math.pi)
    bend = rng.uniform(-0.08, 0.08) * size
    c = n / 2
    points = []
    for t in np.linspace(-0.5, 0.5, 9):
        off = bend * (1 - 4 * t * t)
        x = c + t * size * math.cos(angle) - off * math.sin(angle)
        y = c + t * size * math.sin(angle) + off * math.cos(angle)
        points.append((x, y))
    pts = np.round(np.asarray(points)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, 255, thickness=thick, lineType=cv2.LINE_8)
    alpha = canvas.astype(np.float32) / 255.0 * 0.92
    # Mostly bright: dark straight scratches are the easiest to confuse with cracks.
    value = rng.uniform(20, 55) if rng.random() < 0.35 else rng.uniform(215, 250)
    return alpha, _solid(alpha, (value, value, value)), False


def _spot(rng: np.random.Generator, size: int, thick: int) -> Patch:
    """An irregular filled blob, dark and rust- or oil-coloured."""
    n = size + 4
    canvas = np.zeros((n, n), np.uint8)
    radius = size / 2
    aspect = rng.uniform(0.65, 1.0)
    rot = rng.uniform(0, math.pi)
    k = 14
    theta = np.linspace(0, 2 * math.pi, k, endpoint=False)
    r = radius * (1 + rng.uniform(-0.18, 0.12, size=k))
    x, y = r * np.cos(theta), r * aspect * np.sin(theta)
    xr = x * math.cos(rot) - y * math.sin(rot) + n / 2
    yr = x * math.sin(rot) + y * math.cos(rot) + n / 2
    pts = np.round(np.stack([xr, yr], axis=1)).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [pts], 255, lineType=cv2.LINE_8)
    alpha = canvas.astype(np.float32) / 255.0 * 0.95
    if rng.random() < 0.6:
        rgb = (rng.uniform(110, 150), rng.uniform(50, 75), rng.uniform(20, 40))  # rust
    else:
        rgb = (rng.uniform(25, 45), rng.uniform(25, 40), rng.uniform(20, 35))  # oil / burn
    return alpha, _solid(alpha, rgb), False


def _crack(rng: np.random.Generator, size: int, thick: int) -> Patch:
    """A very dark jagged polyline with an occasional short branch."""
    # Thinner than scratches, and long enough for the zigzag to show rather than a blob.
    thick = max(1, thick - 1)
    size = max(size, 8 * thick + 4)
    pad = thick + 2
    n = size + 2 * pad
    canvas = np.zeros((n, n), np.uint8)
    heading = rng.uniform(0, 2 * math.pi)
    segments = max(4, size // 5)
    step = size / segments
    x, y = 0.0, 0.0
    points = [(x, y)]
    for _ in range(segments):
        a = heading + rng.uniform(-0.9, 0.9)
        x, y = x + step * math.cos(a), y + step * math.sin(a)
        points.append((x, y))
    pts = np.asarray(points)
    lines = [pts]
    if segments >= 6 and rng.random() < 0.6:
        start = pts[int(rng.integers(2, segments - 2))]
        a = heading + rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.2)
        branch = [start]
        for _ in range(segments // 3):
            a2 = a + rng.uniform(-0.7, 0.7)
            branch.append(branch[-1] + step * np.array([math.cos(a2), math.sin(a2)]))
        lines.append(np.asarray(branch))
    # Fit the whole drawing into the patch: the longest extent becomes `size`.
    every = np.concatenate(lines)
    lo, hi = every.min(axis=0), every.max(axis=0)
    scale = size / max(float((hi - lo).max()), 1e-6)
    for line in lines:
        p = np.round((line - lo) * scale + pad).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(canvas, [p], False, 255, thickness=thick, lineType=cv2.LINE_8)
    alpha = canvas.astype(np.float32) / 255.0 * 0.95
    value = rng.uniform(8, 30)
    return alpha, _solid(alpha, (value, value * 0.95, value * 0.9)), False


def _dent(rng: np.random.Generator, size: int, thick: int) -> Patch:
    """A shaded elliptical depression: dark floor and a bright rim on the side facing the light."""
    n = size + 2
    a = size / 2
    b = a * rng.uniform(0.6, 1.0)
    rot = rng.uniform(0, math.pi)
    ys, xs = np.mgrid[0:n, 0:n].astype(np.float32) - (n - 1) / 2
    u = (xs * math.cos(rot) + ys * math.sin(rot)) / a
    v = (-xs * math.sin(rot) + ys * math.cos(rot)) / b
    r2 = u * u + v * v
    inside = r2 <= 1.0
    light = rng.uniform(0, 2 * math.pi)
    # Light direction expressed in image coordinates, then projected on the ellipse's frame.
    lx, ly = math.cos(light), math.sin(light)
    facing = (xs * lx + ys * ly) / a
    shade = -70.0 * (1.0 - r2) + 110.0 * np.clip(facing, 0.0, None) * r2
    alpha = inside.astype(np.float32)
    layer = np.repeat((shade * alpha)[:, :, None], 3, axis=2).astype(np.float32)
    return alpha, layer, True


RENDERERS: dict[str, Callable[[np.random.Generator, int, int], Patch]] = {
    "scratch": _scratch,
    "spot": _spot,
    "crack": _crack,
    "dent": _dent,
}


def _tight(alpha: np.ndarray) -> tuple[int, int, int, int] | None:
    """Pixel extent (x0, y0, x1, y1), exclusive end, of the visible part of a patch."""
    ys, xs = np.nonzero(alpha > 0.05)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _overlaps(
    box: tuple[int, int, int, int], boxes: list[tuple[int, int, int, int]], margin: int
) -> bool:
    x0, y0, x1, y1 = box
    return any(
        x0 < bx1 + margin and bx0 < x1 + margin and y0 < by1 + margin and by0 < y1 + margin
        for bx0, by0, bx1, by1 in boxes
    )


def render_image(
    rng: np.random.Generator,
    width: int,
    height: int,
    defects: Sequence[str],
    *,
    min_defect_size: int,
    max_defect_size: int,
) -> tuple[np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]:
    """Draw one surface with the given defect kinds; return RGB uint8 and (kind, xyxy) boxes."""
    image = _surface(rng, height, width)
    thick = max(1, round(min(width, height) / 128))
    placed: list[tuple[str, tuple[int, int, int, int]]] = []
    limit = max(min_defect_size, min(max_defect_size, min(width, height) - 4))
    for kind in defects:
        # Sizes uniform in sqrt-space: the full range is covered but tiny defects do not dominate.
        lo, hi = math.sqrt(min_defect_size), math.sqrt(limit)
        size = int(round(rng.uniform(lo, hi) ** 2))
        alpha, layer, additive = RENDERERS[kind](rng, size, thick + int(rng.integers(0, 2)))
        extent = _tight(alpha)
        if extent is None:
            continue
        x0, y0, x1, y1 = extent
        alpha, layer = alpha[y0:y1, x0:x1], layer[y0:y1, x0:x1]
        ph, pw = alpha.shape
        if pw > width or ph > height:
            continue
        for _ in range(20):
            ox = int(rng.integers(0, width - pw + 1))
            oy = int(rng.integers(0, height - ph + 1))
            box = (ox, oy, ox + pw, oy + ph)
            if not _overlaps(box, [b for _, b in placed], margin=2):
                break
        else:
            continue
        region = image[oy : oy + ph, ox : ox + pw]
        a = alpha[:, :, None]
        if additive:
            region += layer
        else:
            region *= 1.0 - a
            region += a * layer
        placed.append((kind, box))
    return np.clip(np.round(image), 0, 255).astype(np.uint8), placed


def split_counts(num_images: int, splits: dict[str, float]) -> dict[str, int]:
    """Images per split by largest remainder: shares are met as closely as whole images allow."""
    total = sum(splits.values())
    if total <= 0 or any(f < 0 for f in splits.values()):
        raise ValueError(f"split fractions must be non-negative and sum > 0, got {splits}")
    exact = {name: num_images * f / total for name, f in splits.items()}
    counts = {name: math.floor(v) for name, v in exact.items()}
    by_remainder = sorted(splits, key=lambda name: counts[name] - exact[name])  # stable on ties
    for name in by_remainder[: num_images - sum(counts.values())]:
        counts[name] += 1
    return counts


def _write_png(path: Path, pixels: np.ndarray) -> None:
    """Encode in memory, then write: cv2.imwrite reports a full disk only as False."""
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OutputError(path, "OpenCV could not encode the image")
    try:
        path.write_bytes(encoded.tobytes())
    except OSError as error:
        with contextlib.suppress(OSError):  # no half-written image left behind
            path.unlink(missing_ok=True)
        raise OutputError.from_os_error(path, error) from None


def generate_dataset(
    out_dir: str | Path,
    *,
    num_images: int = 200,
    image_size: int | tuple[int, int] = 256,
    seed: int = 0,
    splits: dict[str, float] | None = None,
    negative_fraction: float = 0.15,
    classes: Sequence[str] = DEFAULT_CLASSES,
    min_defect_size: int = MIN_DEFECT_SIZE,
    max_defect_size: int | None = None,
    max_defects_per_image: int = 3,
) -> dict[str, Path]:
    """Write a synthetic COCO dataset (image_size int or (width, height)); return split -> json path.

    Raises:
        ValueError: an impossible setting (no images, a side smaller than ``min_defect_size``,
            a negative fraction outside 0..1, ...).
        OutputError: `out_dir` or a file in it cannot be written (a file in the way, read-only,
            disk full); the json of a split is written atomically, after its images.
    """
    splits = dict(DEFAULT_SPLITS if splits is None else splits)
    width, height = (image_size, image_size) if isinstance(image_size, int) else image_size
    if num_images < 1:
        raise ValueError(f"num_images must be at least 1, got {num_images}")
    classes = tuple(classes)
    unknown = [c for c in classes if c not in RENDERERS]
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty subset of {tuple(RENDERERS)}, got {classes}")
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1], got {negative_fraction}")
    if max_defects_per_image < 1 or min_defect_size < 2:
        raise ValueError(
            f"max_defects_per_image must be >= 1 (got {max_defects_per_image}) and "
            f"min_defect_size >= 2 (got {min_defect_size})"
        )
    if min(width, height) < min_defect_size:
        raise ValueError(
            f"image_size must be at least min_defect_size ({min_defect_size}) pixels, "
            f"got {width}x{height}"
        )
    if max_defect_size is None:
        max_defect_size = int(0.4 * min(width, height))
    max_defect_size = max(max_defect_size, min_defect_size)

    out = output_folder(Path(out_dir))
    output_folder(out / "annotations")
    categories = [
        {"id": i + 1, "name": name, "supercategory": "defect"} for i, name in enumerate(classes)
    ]
    category_id = {name: i + 1 for i, name in enumerate(classes)}
    paths: dict[str, Path] = {}
    for split_index, (split, count) in enumerate(split_counts(num_images, splits).items()):
        output_folder(out / "images" / split)
        # An exact number of negatives per split, at positions fixed by the seed.
        order = np.random.default_rng([seed, split_index, 1 << 20]).permutation(count)
        negatives = set(order[: int(round(count * negative_fraction))].tolist())
        images, annotations = [], []
        for index in range(count):
            # One generator per image: any image can be reproduced on its own.
            rng = np.random.default_rng([seed, split_index, index])
            kinds: list[str] = []
            if index not in negatives:
                n = int(rng.integers(1, max_defects_per_image + 1))
                kinds = [classes[int(k)] for k in rng.integers(0, len(classes), size=n)]
            pixels, boxes = render_image(
                rng,
                width,
                height,
                kinds,
                min_defect_size=min_defect_size,
                max_defect_size=max_defect_size,
            )
            file_name = f"{split}/{split}_{index:05d}.png"
            _write_png(out / "images" / file_name, pixels)
            image_id = index + 1
            images.append(
                {"id": image_id, "file_name": file_name, "width": width, "height": height}
            )
            for kind, (x0, y0, x1, y1) in boxes:
                w, h = float(x1 - x0), float(y1 - y0)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category_id[kind],
                        "bbox": [float(x0), float(y0), w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        coco = {
            "info": {"description": f"detection synthetic defects, split {split}, seed {seed}"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        path = out / "annotations" / f"{split}.json"
        write_atomic(path, json.dumps(coco, indent=1, sort_keys=True) + "\n")
        paths[split] = path
    return paths
