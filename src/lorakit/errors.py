"""User-facing errors: every one names the file, key or image and says what to do.

The CLI turns a `LorakitError` into a message and its `exit_code`, never a traceback: 2 for bad input (config,
data, model), 3 for `DiskFullError` (out of disk space or quota while writing), 5 for `OutOfMemoryStop`, 6 for
`NonFiniteStop`. `lorakit train` exits 4 when it was asked to stop and saved (docs/stopping-and-resuming.md lists them all).
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

EXIT_INPUT = 2  # config / data / model errors: fix the input and run again
EXIT_DISK_FULL = 3  # out of disk space (ENOSPC) or over quota (EDQUOT): free space and run again
EXIT_STOPPED = 4  # stopped on request (SIGINT, SIGTERM, a queue's stop): checkpoint and LoRA saved, resumable
EXIT_OOM = 5  # out of GPU memory in a step: checkpoint and LoRA saved; retry with less memory and --resume
EXIT_NONFINITE = 6  # too many NaN/inf steps in a row: checkpoint of the last good weights saved
EXIT_INTERRUPTED = 130  # a second Ctrl+C: quit at once (every file is written atomically)
_DISK_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", 122)}
# safetensors (Rust) reports I/O errors as SafetensorError("Error while serializing: IoError(Os { code: 28, …")
_DISK_FULL_TEXT = re.compile(r"code: (28|122)\b|os error (28|122)\b|StorageFull|QuotaExceeded|No space left on device"
                             r"|Disk quota exceeded")


class LorakitError(Exception):
    """An error caused by the user's input; `hint` says how to fix it."""

    exit_code = EXIT_INPUT

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  → {self.hint}"


class ConfigError(LorakitError):
    """A config file or `--set` override is invalid. `problems` lists every issue found at once."""

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems), hint)


class DataError(LorakitError):
    """An image folder or image cannot be used for training."""


class ModelError(LorakitError):
    """A base model cannot be found, recognised or loaded."""


def some_of(items, shown: int = 3) -> str:
    """'a, b, c … and 4 more': a message names a few examples, never hundreds."""
    items = [str(i) for i in items]
    more = f" … and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def human_bytes(n: int) -> str:
    """1536 → '1.5 KiB'."""
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} bytes" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an exception means "no space left" (ENOSPC) or "over quota" (EDQUOT), also as safetensors words it."""
    if isinstance(exc, DiskFullError):
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno in _DISK_FULL_ERRNOS
    return bool(_DISK_FULL_TEXT.search(str(exc)))


class DiskFullError(LorakitError):
    """Out of disk space (or quota) writing `path`; `needed` estimates the bytes the write needs (None: unknown).

    Whatever was written before stays (earlier checkpoints, logs); the failed write leaves no temporary file.
    """

    exit_code = EXIT_DISK_FULL

    def __init__(self, path: Path | str, needed: int | None = None, free: int | None = None,
                 what: str = "writing") -> None:
        self.path, self.needed, self.free = Path(path), needed, free
        need = f"; it needs about {human_bytes(needed)} ({needed} bytes)" if needed else ""
        have = f", {human_bytes(free)} free" if free is not None else ""
        super().__init__(f"out of disk space {what} {self.path}{need}{have}",
                         "free space on that drive (or set output.output_dir / data.cache_folder to another one) "
                         "and run again; files written before are kept")


class OutOfMemoryStop(LorakitError):
    """A training step ran out of GPU memory (after the split retry, if enabled); a checkpoint was saved."""

    exit_code = EXIT_OOM


class NonFiniteStop(LorakitError):
    """Too many steps in a row had a NaN/inf loss or gradient; a checkpoint of the last good weights was saved."""

    exit_code = EXIT_NONFINITE
