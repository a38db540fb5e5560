"""Exception types raised by the library; the CLI turns them into one-line messages."""

from __future__ import annotations

from pathlib import Path


class DetectionError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class InvalidInputError(DetectionError, ValueError):
    """Bad input data: names the file, the record and the field in one line."""

    def __init__(
        self,
        file: str | Path | None,
        problem: str | None = None,
        *,
        record: str | int | None = None,
        field: str | None = None,
    ) -> None:
        if problem is None:
            # Rebuilt from a single message, as torch does when it re-raises an error
            # from a DataLoader worker: keep the type, carry the text.
            self.file, self.record, self.field, self.problem = None, None, None, str(file)
            super().__init__(str(file))
            return
        self.file = str(file) if file is not None else None
        self.record = record
        self.field = field
        self.problem = problem
        parts = []
        if self.file is not None:
            parts.append(self.file)
        if record is not None:
            parts.append(str(record))
        if field is not None:
            parts.append(f"field '{field}'")
        parts.append(problem)
        super().__init__(": ".join(parts))


class ImageReadError(InvalidInputError):
    """An image file is missing, empty, truncated or not an image."""


class WeightsError(DetectionError):
    """Model weights could not be found, downloaded or loaded."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message, or its type name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
