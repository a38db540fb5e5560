"""An output folder that belongs to one run: its settings file (the claim) and atomic writes.

Both `detection inspect` (OUT/job.json) and the demo (OUT/recipe.yaml) record the settings that
decide their outputs when they first write a folder, and refuse to resume it with other ones.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from detection.core.errors import DetectionError


def temporary_path(path: Path) -> Path:
    """A sibling temporary name no other process, on this machine or another, will use."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}")


def write_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary one: readers see the old file or the new one."""
    tmp = temporary_path(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    record.parent.mkdir(parents=True, exist_ok=True)
    as_yaml = record.suffix in (".yaml", ".yml")
    if not record.exists():
        tmp = temporary_path(record)
        text = (
            yaml.safe_dump(settings, sort_keys=False) if as_yaml else json.dumps(settings, indent=2)
        )
        tmp.write_text(text, encoding="utf-8")
        try:
            os.link(tmp, record)  # atomic: fails when another process created it first
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    text = record.read_text(encoding="utf-8")
    recorded = (yaml.safe_load(text) if as_yaml else json.loads(text)) or {}
    changed = [k for k in settings if k not in ignore and recorded.get(k) != settings[k]]
    if changed:
        key = changed[0]
        raise DetectionError(
            f"{record.parent} holds {what} with other settings ({key}: {recorded.get(key)!r} "
            f"there, {settings[key]!r} now); {advice}"
        )
