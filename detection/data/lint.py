"""Check a COCO detection file (and its images) for the mistakes that silently break training."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from detection.core.coco_format import (
    ERROR,
    KINDS,
    LINT_RULES,
    WARNING,
    Finding,
    MalformedJsonError,
    image_files,
    read_json,
    size_mismatch,
    validate,
)
from detection.core.errors import InvalidInputError
from detection.core.images import MAX_PIXELS, image_size, read_image

__all__ = ["ERROR", "KINDS", "WARNING", "Finding", "LintResult", "lint_coco"]


@dataclass
class LintResult:
    """All findings for one annotation file, plus what was checked."""

    file: str
    images_dir: str | None
    num_images: int = 0
    num_annotations: int = 0
    num_categories: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        """Findings that make the file unfit for training or evaluation."""
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        """Findings worth a look that do not break anything."""
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when there are no errors (warnings allowed)."""
        return not self.errors

    def counts(self) -> dict[str, int]:
        """Number of findings per kind, in the order of ``KINDS``."""
        found = Counter(f.kind for f in self.findings)
        return {kind: found[kind] for kind in KINDS if found[kind]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the result."""
        data = asdict(self)
        data["counts"] = self.counts()
        data["ok"] = self.ok
        return data


class _Linter:
    def __init__(self, result: LintResult) -> None:
        self.result = result

    def add(self, kind: str, record: str, field: str | None, message: str) -> None:
        self.result.findings.append(Finding(KINDS[kind], kind, record, field, message))


def lint_coco(
    annotation_file: str | Path,
    images_dir: str | Path | None = None,
    *,
    decode_images: bool = False,
    max_pixels: int | None = MAX_PIXELS,
) -> LintResult:
    """Lint a COCO file; with ``images_dir``, also check every image exists, reads and has the stated size.

    Images are read from their header, or fully decoded with ``decode_images``; either way one
    with more than ``max_pixels`` pixels (None: no limit) is an unreadable-image error.
    """
    path = Path(annotation_file)
    result = LintResult(str(path), str(images_dir) if images_dir is not None else None)
    lint = _Linter(result)
    try:
        data = read_json(path)
    except MalformedJsonError as error:
        lint.add("malformed-json", str(error.record), None, error.problem)
        return result
    result.findings.extend(validate(data, LINT_RULES))
    if not isinstance(data, dict):
        return result
    result.num_images, result.num_annotations, result.num_categories = (
        len(data[key]) if isinstance(data.get(key), list) else 0
        for key in ("images", "annotations", "categories")
    )
    if images_dir is not None:
        for name, file_name, size in image_files(data):
            _check_image(lint, Path(images_dir) / file_name, name, size, decode_images, max_pixels)
    return result


def _check_image(
    lint: _Linter,
    path: Path,
    name: str,
    size: tuple[float, float],
    decode: bool,
    max_pixels: int | None,
) -> None:
    """Existence, readability (header, or a full decode), pixel limit and size of one image."""
    if not path.exists():
        lint.add("missing-image", name, "file_name", f"{path} does not exist")
        return
    try:
        if decode:
            pixels = read_image(path, max_pixels)
            actual = (int(pixels.shape[1]), int(pixels.shape[0]))
        else:
            actual = image_size(path, max_pixels)
    except InvalidInputError as exc:
        lint.add("unreadable-image", name, "file_name", f"{path}: {exc.problem}")
        return
    problem = size_mismatch(size, actual, path, "decoded image" if decode else "header")
    if problem is not None:
        lint.add("size-mismatch", name, "width/height", problem)
