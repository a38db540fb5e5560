"""Start a `detection inspect` job in a subprocess and SIGKILL it mid-way: the exactly-once tests
of the eager and the OpenVINO model share it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import IO


def result_lines(out: Path) -> int:
    """Complete lines in the job's result shards and error files so far."""
    files = [*(out / "results").glob("part-*.jsonl"), *out.glob("errors*.jsonl")]
    return sum(f.read_bytes().count(b"\n") for f in files if f.exists())


def run_until(command: list[str], out: Path, lines: int | None, log: IO[bytes]) -> int | None:
    """Start the job; SIGKILL it (and its decoding worker) once `lines` complete lines exist.

    Returns the exit code when the job finished by itself (always when `lines` is None), None
    when it was killed.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        while process.poll() is None:
            if lines is not None and result_lines(out) >= lines:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return None
            time.sleep(0.01)
        return process.returncode
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
