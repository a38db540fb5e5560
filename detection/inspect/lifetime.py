"""The helper processes of a job (DataLoader workers, spawned ranks) die with the process that
started them, even when it is killed by SIGKILL and cannot clean up.

PyTorch's workers notice a dead parent only between batches, every few seconds; a worker busy
running the model on a batch outlived a SIGKILLed job. On Linux the kernel can signal a child
when its parent dies (prctl PR_SET_PDEATHSIG); elsewhere a thread polls the parent's id.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
POLL_SECONDS = 0.5  # how often the fallback thread looks for its parent


def die_with_parent(parent_pid: int) -> None:
    """Make this process end as soon as process `parent_pid`, its parent, is gone.

    Exits at once when the parent has already died (before the request could take effect).
    """
    if not _kernel_kills_with_parent():
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died first: nothing would collect this process's work


def _kernel_kills_with_parent() -> bool:
    """Ask Linux to SIGKILL this process when its parent dies; False where that cannot be done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(POLL_SECONDS)
    os._exit(1)


def worker_init(parent_pid: int, worker_id: int) -> None:
    """DataLoader `worker_init_fn` (bound to the job's pid with functools.partial)."""
    die_with_parent(parent_pid)
