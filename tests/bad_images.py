"""Bad image files for tests: each kind a user's folder can hold, with the words its error names."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HUGE_SIDE = 20000  # 400 million pixels declared; decoding would need 1.2 GB


def write_huge_png(path: str | Path, width: int = HUGE_SIDE, height: int = HUGE_SIDE) -> Path:
    """A PNG of a few hundred bytes whose header declares width x height RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    pixels = zlib.compress(b"\0" * 1024)  # the first rows only: never decoded
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


def write_bad_files(folder: str | Path) -> dict[str, str]:
    """Bad files under `folder` with image names: path -> words (a|b) one of which their error contains."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bad: dict[str, str] = {}
    fifo = folder / "part.png"
    os.mkfifo(fifo)  # reading it would block forever
    bad[str(fifo)] = "named pipe"
    device = folder / "null.png"
    device.symlink_to(os.devnull)
    bad[str(device)] = "character device"
    empty = folder / "zero.jpg"
    empty.write_bytes(b"")
    bad[str(empty)] = "empty"
    ok, jpeg = cv2.imencode(".jpg", np.full((32, 32, 3), 99, np.uint8))
    truncated = folder / "truncated.jpg"
    truncated.write_bytes(jpeg.tobytes()[: len(jpeg) // 2])
    bad[str(truncated)] = "truncated"
    text = folder / "notes.png"
    text.write_text("not an image\n" * 10)
    bad[str(text)] = "decode|header"
    bad[str(write_huge_png(folder / "huge.png"))] = "max_pixels"
    return bad


def within(seconds: float, call: Callable[[], Any]) -> Any:
    """Run `call` in a daemon thread and return or raise what it did: a read that blocks (a FIFO)
    fails the test instead of hanging the run."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
