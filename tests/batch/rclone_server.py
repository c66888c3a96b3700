"""A real rclone remote for tests: `rclone serve webdav` on a free local port, configured by environment variables.

    with serve_webdav(tmp_path / "served") as server:
        Remote(server.root, env=server.env)  # or subprocess.run([...], env={**os.environ, **server.env})

or the pytest fixture `webdav_remote` (import it into a test module). Skipped when rclone is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import pytest

REMOTE_NAME = "lkt"
START_DEADLINE_S = 20.0  # only a limit on waiting for the server to answer, never an expected duration


class ServedRemote(NamedTuple):
    root: str  # "lkt:" — the served folder's top
    env: dict[str, str]  # RCLONE_CONFIG_LKT_* (+ RCLONE_CONFIG: an empty config file, so the user's is not read)
    folder: Path  # what the server serves; tests read and plant files here directly
    port: int


def rclone_binary() -> str:
    found = shutil.which("rclone")
    if found is None:
        pytest.skip("rclone is not installed (e.g. /usr/bin/rclone from `apt install rclone`); the remote tests "
                    "run a real `rclone serve webdav`")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def serve_webdav(folder: Path) -> Iterator[ServedRemote]:
    rclone = rclone_binary()
    folder.mkdir(parents=True, exist_ok=True)
    config_dir = Path(tempfile.mkdtemp(prefix="lkt-rclone-"))
    (config_dir / "rclone.conf").write_text("", encoding="utf-8")
    port = free_port()
    log = (config_dir / "serve.log").open("w")
    # --dir-cache-time 0s: tests plant and change files in `folder` behind the server's back; with the default
    # 5 minutes of cached listings it would keep reporting the old names and sizes.
    command = [rclone, "serve", "webdav", str(folder), "--addr", f"127.0.0.1:{port}", "--dir-cache-time", "0s"]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                              env={"RCLONE_CONFIG": str(config_dir / "rclone.conf"), "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while not _answers(port):  # poll the port: the server is ready when it accepts a connection
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rclone serve webdav did not start: {(config_dir / 'serve.log').read_text()}")
            try:
                server.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        upper = REMOTE_NAME.upper()
        env = {f"RCLONE_CONFIG_{upper}_TYPE": "webdav", f"RCLONE_CONFIG_{upper}_URL": f"http://127.0.0.1:{port}",
               f"RCLONE_CONFIG_{upper}_VENDOR": "other", "RCLONE_CONFIG": str(config_dir / "rclone.conf")}
        yield ServedRemote(f"{REMOTE_NAME}:", env, folder, port)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
        shutil.rmtree(config_dir, ignore_errors=True)


@pytest.fixture
def webdav_remote(tmp_path: Path) -> Iterator[ServedRemote]:
    """A served empty folder (tmp_path / "served") as rclone remote "lkt:"."""
    with serve_webdav(tmp_path / "served") as server:
        yield server
