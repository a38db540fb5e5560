"""Crash-safe JSON Lines output: sharded, append-only, resumable after a kill at any moment.

The rule that makes a job exactly-once: a record counts only when its line is complete, i.e. ends
with a newline. A kill can only leave an unterminated tail in the file being written; the owner
truncates it before appending again, and readers ignore it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from detection.core.errors import DetectionError, first_line
from detection.core.run_folder import writing
from detection.inspect.records import BadLine, error_problem, result_problem

RESULTS_DIR = "results"
ProblemOf = Callable[[Any], str | None]  # why a parsed line is not a sound record
_SHARD_RE = re.compile(r"part-(\d+)-(\d+)\.jsonl$")


def repair_tail(path: str | Path) -> int:
    """Truncate an unterminated last line left by a killed writer; returns the bytes removed."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Walk back in blocks to the last newline; lines are short, so this reads little.
        end = size
        while end > 0:
            start = max(0, end - 65536)
            f.seek(start)
            block = f.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        else:
            keep = 0
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
        return size - keep


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of the complete lines of a JSON Lines file; a partial or garbled line is skipped."""
    for _, line in _complete_lines(path):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            yield record


def _complete_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(1-based number, bytes) of each newline-terminated line; a torn last line is left out."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return  # a writer is (or was killed) in the middle of this line
            yield number, line


def _parse(path: Path, number: int, line: bytes, problem_of: ProblemOf) -> dict | BadLine:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError is a ValueError
        return BadLine(path, number, f"not a JSON line ({first_line(err)})")
    problem = problem_of(record)
    return record if problem is None else BadLine(path, number, problem)


def read_sound(path: str | Path, problem_of: ProblemOf) -> tuple[list[dict], list[BadLine]]:
    """The sound records of a JSON Lines file's complete lines, and its bad lines: those that do
    not parse or that `problem_of` finds a problem in."""
    path = Path(path)
    records, bad = [], []
    for number, line in _complete_lines(path):
        parsed = _parse(path, number, line, problem_of)
        (bad if isinstance(parsed, BadLine) else records).append(parsed)
    return records, bad


def drop_bad_lines(path: str | Path, problem_of: ProblemOf, fsync: bool = True) -> list[BadLine]:
    """Rewrite a JSON Lines file without its bad lines (and a torn last line), atomically;
    returns the lines dropped. Only the process that appends to the file may call this."""
    path = Path(path)
    if not path.exists():
        return []
    kept, bad = [], []
    for number, line in _complete_lines(path):
        parsed = _parse(path, number, line, problem_of)
        if isinstance(parsed, BadLine):
            bad.append(parsed)
        else:
            kept.append(line)  # the bytes as written, not a re-encoding
    if bad:
        _replace(path, kept, fsync)
    return bad


def _replace(path: Path, lines: Sequence[bytes], fsync: bool) -> None:
    """Replace `path` by `lines` through a temporary file, removed again if the write fails."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with writing(path), open(tmp, "wb") as f:
            f.write(b"".join(lines))
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        with writing(path):
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def filter_records(
    path: str | Path, keep: Callable[[dict[str, Any]], bool], fsync: bool = True
) -> int:
    """Rewrite a JSON Lines file with only the complete records `keep` accepts, atomically (a kill
    leaves the old file or the new one); returns the records dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    records = list(iter_records(path))
    kept = [r for r in records if keep(r)]
    if len(kept) == len(records):
        return 0  # a torn last line, if any, is the appender's to repair
    _replace(path, [dumps_line(r) for r in kept], fsync)
    return len(records) - len(kept)


def dumps_line(record: dict[str, Any]) -> bytes:
    """One record as a JSON line, newline included."""
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("utf-8")


class JsonlAppender:
    """Appends batches of records to one file; each batch is flushed and fsynced."""

    def __init__(self, path: str | Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            repair_tail(self.path)
        self.fsync = fsync
        self._file: BinaryIO = open(self.path, "ab")  # noqa: SIM115 - closed in close()
        self.lines = count_lines(self.path)

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append records as complete lines and make them durable before returning.

        Raises:
            OutputError: the disk refused the write (full, read-only); a torn last line may be
            left, which the next run repairs.
        """
        if not records:
            return
        with writing(self.path):
            self._file.write(b"".join(dumps_line(r) for r in records))
            self._sync()
        self.lines += len(records)

    def _sync(self) -> None:
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush and close the file.

        Raises:
            OutputError: the last lines could not be made durable (the file is closed anyway).
        """
        if self._file.closed:
            return
        try:
            with writing(self.path):
                self._sync()
        finally:
            # After a failed flush, close() retries it and fails again: the error above says so.
            with contextlib.suppress(OSError):
                self._file.close()


class ShardedJsonlWriter:
    """Rank `rank`'s results as `part-<rank>-<n>.jsonl`, a new shard every `max_lines` lines.

    On start it continues the rank's last shard (after repairing its tail), so restarts do not
    litter the folder with small files.
    """

    def __init__(
        self, directory: str | Path, rank: int, max_lines: int = 10000, fsync: bool = True
    ) -> None:
        if max_lines < 1:
            raise ValueError(f"max_lines must be >= 1, got {max_lines}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.max_lines = max_lines
        self.fsync = fsync
        own = sorted(shard_index(p) for p in self.directory.glob(f"part-{rank:05d}-*.jsonl"))
        for index in own[:-1]:
            repair_tail(self._path(index))  # only the last can be torn, but a repair is cheap
        self._index = own[-1] if own else 0
        self._current = JsonlAppender(self._path(self._index), fsync)

    def _path(self, index: int) -> Path:
        return self.directory / f"part-{self.rank:05d}-{index:05d}.jsonl"

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append records, rotating to a new shard whenever the current one is full."""
        pending = list(records)
        while pending:
            if self._current.lines >= self.max_lines:
                self._current.close()
                self._index += 1
                self._current = JsonlAppender(self._path(self._index), self.fsync)
            room = self.max_lines - self._current.lines
            self._current.write(pending[:room])
            pending = pending[room:]

    def close(self) -> None:
        """Close the current shard."""
        self._current.close()


def shard_index(path: Path) -> int:
    """n of a `part-<rank>-<n>.jsonl` file name."""
    match = _SHARD_RE.search(path.name)
    if match is None:
        raise ValueError(f"{path} is not a shard file")
    return int(match.group(2))


def count_lines(path: str | Path) -> int:
    """Number of newline-terminated lines in a file."""
    count = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
    return count


def result_files(output: str | Path) -> list[Path]:
    """Every rank's result shards of a job, in name order."""
    return sorted((Path(output) / RESULTS_DIR).glob("part-*.jsonl"))


def error_file(output: str | Path, rank: int) -> Path:
    """Where rank `rank` reports bad inputs: errors.jsonl for rank 0, errors-<rank>.jsonl else."""
    name = "errors.jsonl" if rank == 0 else f"errors-{rank:05d}.jsonl"
    return Path(output) / name


def error_files(output: str | Path) -> list[Path]:
    """Every rank's error files of a job."""
    return sorted(Path(output).glob("errors*.jsonl"))


def iter_results(output: str | Path) -> Iterator[dict[str, Any]]:
    """Every sound result record of a job, shard by shard (bad lines left out)."""
    for path in result_files(output):
        yield from read_sound(path, result_problem)[0]


def iter_errors(output: str | Path) -> Iterator[dict[str, Any]]:
    """Every sound error record of a job (bad lines left out)."""
    for path in error_files(output):
        yield from read_sound(path, error_problem)[0]


def bad_lines(output: str | Path) -> list[BadLine]:
    """The lines of every rank's result and error files that are not sound records."""
    found = [bad for path in result_files(output) for bad in read_sound(path, result_problem)[1]]
    return found + [
        bad for path in error_files(output) for bad in read_sound(path, error_problem)[1]
    ]


class RankLock:
    """An exclusive lock on one rank of an output folder: two processes never write one shard."""

    def __init__(self, output: str | Path, rank: int) -> None:
        directory = Path(output) / RESULTS_DIR
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f".lock-{rank:05d}"
        self.rank = rank
        self._file: BinaryIO | None = None

    def __enter__(self) -> RankLock:
        self._file = open(self.path, "ab")  # noqa: SIM115 - closed in __exit__
        try:
            # The kernel drops the lock when its holder dies, even by SIGKILL.
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise DetectionError(
                f"{self.path.parent.parent}: another process is writing rank {self.rank} of this job"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
