"""The child-process runner `lorakit batch` trains in: lines streamed and logged, the exit status, the allocator
setting for the child, and a child that never outlives a killed parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorakit.process import ALLOC_CONF, child_environment, run_child


def test_lines_are_streamed_logged_and_the_status_kept(tmp_path: Path) -> None:
    seen: list[str] = []
    script = "import sys\nprint('one'); print('two', file=sys.stderr); print('drei ü'); sys.exit(3)"
    result = run_child([sys.executable, "-c", script], tmp_path / "logs" / "run.log", seen.append)
    assert result.exit_code == 3 and seen == ["one", "two", "drei ü"] and result.tail == "one\ntwo\ndrei ü"
    assert (tmp_path / "logs" / "run.log").read_text(encoding="utf-8") == "one\ntwo\ndrei ü\n"


def test_the_child_gets_the_allocator_setting_unless_the_user_chose(monkeypatch) -> None:
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    monkeypatch.setenv("PYTORCH_ALLOC_CONF", "backend:cudaMallocAsync")
    env = child_environment()
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == ALLOC_CONF == "expandable_segments:True"
    assert env["PYTORCH_ALLOC_CONF"] == "backend:cudaMallocAsync" and env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_parent_takes_its_child_along(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    (tmp_path / "child.py").write_text(
        f"import os, time\nopen({str(pid_file)!r}, 'w').write(str(os.getpid()))\nprint('up', flush=True)\n"
        "time.sleep(600)\n", encoding="utf-8")
    (tmp_path / "parent.py").write_text(
        "import sys\nfrom pathlib import Path\nfrom lorakit.process import run_child\n"
        f"run_child([sys.executable, {str(tmp_path / 'child.py')!r}], Path({str(tmp_path / 'c.log')!r}), print)\n",
        encoding="utf-8")
    parent = subprocess.Popen([sys.executable, str(tmp_path / "parent.py")], stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "up"
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30  # a bounded wait for the kernel to deliver the signal, not a timing check
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False
