"""An output folder that belongs to one run: its settings file (the claim) and atomic writes.

Both `detection inspect` (OUT/job.json) and the demo (OUT/recipe.yaml) record the settings that
decide their outputs when they first write a folder, and refuse to resume it with other ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import yaml

from detection.core.errors import DetectionError, OutputError


def temporary_path(path: Path) -> Path:
    """A sibling temporary name no other process, on this machine or another, will use."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}")


def write_atomic(path: Path, data: str | bytes, *, durable: bool = False) -> None:
    """Write a file (text as UTF-8, or bytes) through a temporary one: readers see the old file
    or the new one.

    Args:
        path: the file to write.
        data: its content.
        durable: fsync before the rename (model files: a full disk may only say so there).

    Raises:
        OutputError: the file cannot be written (a folder in its place, read-only, disk full);
        no temporary file is left behind.
    """
    tmp = temporary_path(path)
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        if durable:
            descriptor = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if path.is_dir():
            raise OutputError(path, "is a folder; name a file to write") from None
        raise OutputError.from_os_error(path, error) from None


def output_folder(path: Path) -> Path:
    """`path` as an existing folder, created with its parents when missing.

    Raises:
        OutputError: `path` (or a parent) is a file, or the folder cannot be created.
    """
    if path.exists() and not path.is_dir():
        raise OutputError(path, "is a file; name a folder to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError.from_os_error(path, error) from None
    return path


def check_writable_folder(path: Path) -> None:
    """Refuse a folder to be written that cannot be, without creating it: `path` (or the
    nearest part of it that exists) must be a folder in which a file can be created.

    Raises:
        OutputError: a file stands where the folder should be, or the disk refuses (read-only,
        no permission); the probe file is removed in every case.
    """
    existing = next(p for p in (path, *path.parents) if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise OutputError(existing, "is a file, not a folder to write the run into")
    probe = temporary_path(existing / "probe")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        os.unlink(probe)
    except OSError as error:
        raise OutputError.from_os_error(existing, error) from None


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError inside the block into an OutputError naming `path` (one line, no trace)."""
    try:
        yield
    except OSError as error:
        raise OutputError.from_os_error(path, error) from None


def claim_folder(
    record: Path,
    settings: dict[str, Any],
    *,
    what: str,
    advice: str,
    ignore: Collection[str] = (),
) -> None:
    """Record `settings` in the file `record` (YAML by suffix, else JSON), or check that the
    recorded ones match; keys in `ignore` are written but not compared.

    Of processes (ranks, nodes) claiming the same folder together, exactly one writes the file.
    """
    output_folder(record.parent)
    as_yaml = record.suffix in (".yaml", ".yml")
    if not record.exists():
        tmp = temporary_path(record)
        text = (
            yaml.safe_dump(settings, sort_keys=False) if as_yaml else json.dumps(settings, indent=2)
        )
        try:
            tmp.write_text(text, encoding="utf-8")
            os.link(tmp, record)  # atomic: fails when another process created it first
        except FileExistsError:
            pass
        except OSError as error:
            raise OutputError.from_os_error(record, error) from None
        finally:
            tmp.unlink(missing_ok=True)
    text = record.read_text(encoding="utf-8")
    recorded = (yaml.safe_load(text) if as_yaml else json.loads(text)) or {}
    changed = [k for k in settings if k not in ignore and recorded.get(k) != settings[k]]
    if changed:
        key = changed[0]
        raise DetectionError(
            f"{record.parent} holds {what} with other settings ({key}: {recorded.get(key)!r} "
            f"there, {settings[key]!r} now); {advice}"
        )
