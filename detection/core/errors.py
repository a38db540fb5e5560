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


class OutputError(DetectionError):
    """An output cannot be written: its path is a file of the wrong kind (a file where a folder
    is needed, or a folder where a file is), or the disk refuses (read-only, full)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    @classmethod
    def from_os_error(cls, path: str | Path, error: OSError) -> OutputError:
        """The one wording of a failed write: ``PATH: cannot write (No space left on device)``."""
        return cls(path, f"cannot write ({error.strerror or error})")


class ConfigError(DetectionError, ValueError):
    """A setting names something that does not exist (a model, an implementation, a file
    format) or combines options that do not go together."""


class UnsupportedInputError(InvalidInputError, TypeError):
    """An input of a kind the function does not take (None, a number, encoded bytes): a
    ValueError like every bad input, and a TypeError for what it is."""
