"""A lorakit command in a child process, its output streamed line by line as it comes and kept in a log file.

What `lorakit batch` (and a job queue) runs each training in: a crash, an out-of-memory or a hung CUDA context ends
with the child, never with the batch. The child's stdout is a pipe, so lorakit prints plain progress lines there (no
cursor tricks), which read well in a terminal, a log file and a Jupyter cell alike.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

# Set for the child before CUDA starts: expandable segments let PyTorch reuse fragmented memory, which turns many
# borderline out-of-memory runs into working ones. PyTorch ≥ 2.9 reads PYTORCH_ALLOC_CONF, older ones the CUDA name.
ALLOC_CONF = "expandable_segments:True"


@dataclass
class ChildResult:
    exit_code: int
    tail: str  # the last lines of its output (what an error classifier reads)


def lorakit_command(*args: str) -> list[str]:
    """`lorakit ARGS` as this Python runs it (the same environment, whatever PATH says)."""
    return [sys.executable, "-m", "lorakit.cli", *args]


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"):  # the user's own value wins
        env.setdefault(name, ALLOC_CONF)
    env["PYTHONUNBUFFERED"] = "1"  # lines as they are printed, not when a buffer fills
    env.update(extra or {})
    return env


def run_child(command: Sequence[str], log: Path, on_line: Callable[[str], None] | None = None,
              env: Mapping[str, str] | None = None, tail_lines: int = 200,
              on_start: Callable[[int], None] | None = None) -> ChildResult:
    """Run `command`, stdout and stderr merged; each line goes to `on_line` and is appended to `log` (flushed per
    line, so a crash of this process still leaves the log). Ctrl+C reaches the child too (same process group).
    `on_start(pid)` is called once the child exists (a queue records it, to stop it later)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    with open(log, "a", encoding="utf-8") as out, subprocess.Popen(
            list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env or child_environment()),
            text=True, encoding="utf-8", errors="replace", bufsize=1,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None) as child:
        assert child.stdout is not None
        if on_start:
            on_start(child.pid)
        for line in child.stdout:
            line = line.rstrip("\n")
            out.write(line + "\n")
            out.flush()
            tail.append(line)
            if on_line:
                on_line(line)
        code = child.wait()
    return ChildResult(code, "\n".join(tail))


def _die_with_parent() -> None:
    """In the child, before it starts: if this process is killed (SIGKILL, a crashed notebook kernel), the child
    gets SIGKILL too, instead of training on unseen and holding the GPU's memory (Linux's PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
