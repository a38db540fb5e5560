"""An inspect folder as the report reads it: settings, summary, result records and errors."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detection.core.errors import InvalidInputError
from detection.inspect.outputs import JOB_FILE, SUMMARY_FILE
from detection.inspect.writer import bad_lines, iter_errors, iter_results, result_files

RECORD_FIELDS = ("image", "width", "height", "decision", "detections")
DETECTION_FIELDS = ("bbox", "score", "class_name", "fail")


@dataclass
class InspectFolder:
    """What a finished (or partial) inspection job left in its output folder.

    ``records`` holds each image once (its first complete line, as summary.json counts it);
    ``errors`` the inputs that could not be inspected, also once each; ``bad_lines`` the lines
    that are not sound records (summary.json leaves them out too), as "file line N: problem".
    """

    path: Path
    settings: dict[str, Any]
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[str] = field(default_factory=list)  # lines the job's readers leave out

    @property
    def class_names(self) -> list[str]:
        """The classes the job's thresholds name, in the checkpoint's order."""
        return list(self.settings["thresholds"])

    @property
    def thresholds(self) -> dict[str, float]:
        """The per-class thresholds the job failed parts by."""
        return {k: float(v) for k, v in self.settings["thresholds"].items()}


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InvalidInputError(path, f"unreadable {what} ({type(err).__name__})") from None
    if not isinstance(data, dict):
        raise InvalidInputError(path, f"{what} must be a JSON object")
    return data


def _check_record(record: dict[str, Any], source: str, line: int) -> None:
    for name in RECORD_FIELDS:
        if name not in record:
            raise InvalidInputError(source, "missing", record=f"record {line}", field=name)
    if not isinstance(record["image"], str):
        raise InvalidInputError(source, "must be a string", record=f"record {line}", field="image")
    if not isinstance(record["detections"], list):
        raise InvalidInputError(
            source, "must be a list", record=f"record {line}", field="detections"
        )
    for k, det in enumerate(record["detections"]):
        for name in DETECTION_FIELDS:
            if not isinstance(det, dict) or name not in det:
                raise InvalidInputError(
                    source, "missing", record=f"record {line}", field=f"detections[{k}].{name}"
                )


def read_inspect_folder(path: str | Path) -> InspectFolder:
    """Read an inspect output folder; InvalidInputError (naming the file) if it is not one.

    Raises:
        InvalidInputError: no job.json / summary.json, or a record lacks a field the page needs.
    """
    path = Path(path)
    if not path.is_dir():
        raise InvalidInputError(path, "not a folder")
    for name in (JOB_FILE, SUMMARY_FILE):
        if not (path / name).is_file():
            raise InvalidInputError(
                path, f"not an inspect folder (no {name}; run `detection inspect` first)"
            )
    settings = _read_json_object(path / JOB_FILE, "job settings")
    if not isinstance(settings.get("thresholds"), dict):
        raise InvalidInputError(path / JOB_FILE, "missing", field="thresholds")
    summary = _read_json_object(path / SUMMARY_FILE, "summary")
    folder = InspectFolder(path, settings, summary)
    seen: set[str] = set()
    source = ", ".join(str(p) for p in result_files(path)) or str(path)
    for line, record in enumerate(iter_results(path)):
        _check_record(record, source, line)
        if record["image"] in seen:
            continue  # a duplicate line: summary.json counts the first one too
        seen.add(record["image"])
        folder.records.append(record)
    for record in iter_errors(path):
        image = record.get("image")
        if isinstance(image, str) and image not in seen:
            seen.add(image)
            folder.errors.append(record)
    folder.bad_lines = [str(bad) for bad in bad_lines(path)]
    return folder
