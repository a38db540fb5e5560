"""Input discovery for batch jobs: folders, glob patterns and list files -> a sorted image list."""

from __future__ import annotations

import glob
import os
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from detection.core.errors import InvalidInputError
from detection.core.images import IMAGE_EXTENSIONS

# A file with one of these suffixes given as --input is read as a list of image paths.
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
_GLOB_CHARS = frozenset("*?[")


def _walk_folder(folder: str, exclude: set[str], extensions: frozenset[str]) -> list[str]:
    """Image files under `folder`, recursively; hidden files/folders and `exclude` are skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        # Hidden entries (.git, macOS '._x.jpg' resource forks) are never inspection images, and
        # the job's own output folder must not feed its drawn images back in as inputs.
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".") and os.path.abspath(os.path.join(root, d)) not in exclude
        ]
        found.extend(
            os.path.join(root, f)
            for f in files
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in extensions
        )
    return found


def _read_list(list_file: Path) -> list[str]:
    """Paths in a list file, one a line; '#' comments and blank lines skipped.

    Relative paths are taken relative to the list file's folder, so a list travels with its images.
    """
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInputError(list_file, f"cannot read the list of images ({err})") from None
    base = list_file.parent
    paths = []
    for line in lines:
        entry = line.strip()
        if entry and not entry.startswith("#"):
            paths.append(entry if os.path.isabs(entry) else os.path.join(base, entry))
    return paths


def discover_inputs(
    specs: Sequence[str | Path],
    exclude: Sequence[str | Path] = (),
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
) -> list[str]:
    """Resolve --input values (folder, glob, list file or image file) to sorted absolute paths.

    Folders are searched recursively for image extensions; glob matches, list entries and files
    named directly are taken as given (a non-image among them, or a FIFO, device or socket, is
    reported as a bad input by the job, never dropped or read here).
    """
    extensions = frozenset(e.lower() for e in extensions)
    excluded = {os.path.abspath(p) for p in exclude}
    paths: list[str] = []
    for raw in specs:
        spec = str(raw)
        if os.path.isdir(spec):
            paths.extend(_walk_folder(spec, excluded, extensions))
        elif os.path.isfile(spec) and Path(spec).suffix.lower() in LIST_SUFFIXES:
            paths.extend(_read_list(Path(spec)))
        elif os.path.exists(spec):
            paths.append(spec)  # an image file, or a FIFO, device or socket the job reports
        elif _GLOB_CHARS & set(spec):
            matches = [p for p in glob.glob(spec, recursive=True) if not os.path.isdir(p)]
            if not matches:
                raise InvalidInputError(spec, "pattern matches no files")
            paths.extend(matches)
        else:
            raise InvalidInputError(spec, "no such file or folder")
    # Absolute, normalised paths name each image one way whatever the working folder or the
    # spelling of --input, so a restart recognises what is done; sorting makes runs reproducible.
    return sorted({os.path.abspath(p) for p in paths})


def shard_of(path: str, world_size: int) -> int:
    """The rank that owns `path`: a stable hash, so every node agrees without sharing a list.

    Hashing the path (not its position in the list) keeps ownership fixed when files are added
    between runs or when two nodes list a folder at slightly different times.
    """
    # fsencode: a file name that is not valid UTF-8 arrives with surrogate escapes; for every
    # other name these are its UTF-8 bytes, so ownership is the same as it always was.
    return zlib.crc32(os.fsencode(path)) % world_size


def shard_items(items: Sequence[str], rank: int, world_size: int) -> list[str]:
    """The items that rank `rank` of `world_size` processes, in their original order."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside 0..{world_size - 1}")
    return [p for p in items if shard_of(p, world_size) == rank]
