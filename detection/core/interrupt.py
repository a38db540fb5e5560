"""SIGTERM ends a command as Ctrl-C does: schedulers, `docker stop` and `kill` send it."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[list[bool]]:
    """Within the block, SIGTERM raises KeyboardInterrupt in this process; yields [received].

    Forked children (DataLoader workers) inherit the handler but still die by the signal, as
    before, so a worker never outlives a stopped job. Outside the main thread it does nothing:
    only the main thread may set signal handlers.
    """
    received = [False]
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received[0] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)
