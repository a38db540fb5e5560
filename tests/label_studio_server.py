"""A real Label Studio server for the review tests, started from its own virtual environment.

`.ci/parts/label_studio.sh` installs it (at $LABEL_STUDIO_VENV, default .venv-label-studio in
the repository root). The session fixture `label_studio` starts it on 127.0.0.1 with a fresh
SQLite data folder, a known legacy API token and local-files serving below a document root,
waits for /health, and stops the whole process group at the end.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = ".ci/parts/label_studio.sh"
START_TIMEOUT_S = 300  # measured: 45 s on a quiet machine, 135 s on a loaded 2-core one


@dataclass(frozen=True)
class LabelStudio:
    """A running server: its URL, an API token, and the folder its local files are served from."""

    url: str
    token: str
    document_root: Path
    log: Path


def label_studio_venv() -> Path:
    """Where the Label Studio virtual environment lives."""
    return Path(os.environ.get("LABEL_STUDIO_VENV", REPO / ".venv-label-studio"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    """Start Label Studio, yield how to reach it, stop it."""
    executable = label_studio_venv() / "bin" / "label-studio"
    if not executable.exists():
        pytest.fail(f"Label Studio is not installed at {executable.parent.parent}: run "
                    f"{INSTALL_SCRIPT}", pytrace=False)  # fmt: skip
    base = tmp_path_factory.mktemp("label_studio")
    document_root = base / "files"
    document_root.mkdir()
    port, token = _free_port(), secrets.token_hex(20)
    env = {
        **os.environ,
        "HOME": str(base),  # nothing lands in the user's ~/.local/share/label-studio
        "LABEL_STUDIO_BASE_DATA_DIR": str(base / "data"),
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
    }
    command = [
        str(executable), "start", "--no-browser", "--host", "127.0.0.1", "--port", str(port),
        "--username", "reviewer@example.com", "--password", secrets.token_hex(8),
        "--user-token", token, "--enable-legacy-api-token",
    ]  # fmt: skip
    log = base / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(url):
            if process.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                pytest.fail(
                    f"Label Studio exited with {process.returncode}:\n{tail}", pytrace=False
                )
            if time.monotonic() > deadline:
                pytest.fail(f"Label Studio did not answer /health in {START_TIMEOUT_S} s "
                            f"(log: {log})", pytrace=False)  # fmt: skip
            time.sleep(2)
        yield LabelStudio(url, token, document_root, log)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
