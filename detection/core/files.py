"""Which files may be read: only regular ones, checked before ``open()``.

Opening a FIFO blocks until a writer comes (maybe never), and a device may never end, so every
json, YAML, XML, text and image file the toolkit reads passes this one check first, and every
refusal reads the same (``is a named pipe (FIFO), not a regular file``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from detection.core.errors import InvalidInputError

_KINDS = {
    stat.S_ISFIFO: "a named pipe (FIFO)",
    stat.S_ISSOCK: "a socket",
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
}


def not_regular(mode: int, noun: str = "a regular file") -> str | None:
    """Why a file of this ``st_mode`` must not be read (as ``noun``), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"is a directory, not {noun}"
    kind = next((name for test, name in _KINDS.items() if test(mode)), "a special file")
    return f"is {kind}, not a regular file"


def regular_file_problem(path: str | Path) -> str | None:
    """Why `path` must not be opened for reading, or None for an existing regular file."""
    try:
        return not_regular(os.stat(path).st_mode)
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot read the file ({error.strerror or error})"


def check_regular_file(
    path: str | Path, error: type[InvalidInputError] = InvalidInputError
) -> Path:
    """`path` as a Path when it is an existing regular file.

    Raises:
        ``error`` (an InvalidInputError by default) naming the path and why, in one line:
        ``file not found``, ``is a named pipe (FIFO), not a regular file``, ...
    """
    problem = regular_file_problem(path)
    if problem is not None:
        raise error(path, problem)
    return Path(path)


def read_yaml(path: str | Path) -> Any:
    """Parse a regular UTF-8 YAML file (safe loader).

    Raises:
        InvalidInputError: not a regular file, unreadable, not UTF-8, or malformed YAML (the
        message names the line and column, in one line).
    """
    import yaml

    path = check_regular_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(path, f"cannot read the file ({error})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or type(error).__name__
        record = f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else None
        raise InvalidInputError(path, f"malformed YAML: {problem}", record=record) from None
