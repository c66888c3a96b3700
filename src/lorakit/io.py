"""Safe file writes: write to a temporary name beside the target, then rename (never a half-written file).

Temporary names are `.<name>.<32 hex>.tmp`, so a run killed mid-write leaves files `prepare` recognises and
cleans up; they are created normally, so the result has the usual permissions (umask), unlike mkstemp's 0600.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temp_name(target: Path) -> Path:
    """A fresh temporary path beside `target`."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; what the caller writes there replaces `target` atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # on disk before the rename, so a crash leaves the old file or the new one
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: Path, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
