"""Safe file writes: write to a temporary name beside the target, then rename (never a half-written file).

Temporary names are `.<name>.<host>_<pid>.<32 hex>.tmp` (files, and checkpoint folders being written): a run
killed mid-write leaves files that the next `prepare` or `train` recognises and removes — but only when the
writing process is gone, so two runs sharing a folder never delete each other's file in progress. The result gets the usual permissions (0o666 & ~umask, or the
replaced file's mode), not the 0600 that mkstemp and safetensors' `save_file` give. A full disk (ENOSPC) or quota
(EDQUOT) becomes a `DiskFullError` naming the file and its size; the temporary file is removed, nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import DiskFullError, LorakitError, is_disk_full

# `.<name>.<32 hex>.tmp` (before owners were recorded) or `.<name>.<host>_<pid>.<32 hex>.tmp`
TEMP_PATTERN = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<host>[A-Za-z0-9-]{0,32})_(?P<pid>[0-9]{1,10})\.)?"
                          r"(?P<hex>[0-9a-f]{32})\.tmp$")
FOREIGN_TEMP_AGE_S = 7 * 24 * 3600  # another machine's temp (shared drive) is removed only when this old
# Our own host's temp with a dead writer must also be this old: containers sharing a host name and a volume see
# each other's live PIDs as dead, but a live writer keeps touching its file.
STALE_TEMP_AGE_S = 10 * 60
TEMP_NAME_KEEP = 100  # bytes of the target's name kept in a temp name, so a long target name still has room


def _host() -> str:
    """This machine's name as it appears in temp names (letters, digits, '-'; at most 32)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]


def temp_name(target: Path) -> Path:
    """A fresh temporary path beside `target`, naming this host and process. The target's name is cut to 100
    bytes, so the temporary name is never much longer than 180 bytes whatever the target's."""
    name = target.name.encode("utf-8")[:TEMP_NAME_KEEP].decode("utf-8", "ignore")
    return target.with_name(f".{name}.{_host()}_{os.getpid()}.{uuid.uuid4().hex}.tmp")


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _file_mode(target: Path) -> int:
    """The mode a new file gets (0o666 & ~umask), or the mode of the file it replaces."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        return 0o666 & ~current_umask()


@contextmanager
def atomic_path(target: Path, size_hint: int | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; what the caller writes there replaces `target` atomically.

    `size_hint` (bytes the file will take) goes into the message when the disk fills up.
    """
    tmp = temp_name(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.chmod(tmp, _file_mode(target))
        with open(tmp, "rb+") as f:  # on disk before the rename, so a crash leaves the old file or the new one
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except DiskFullError:
        raise
    except Exception as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(target, size_hint or _size(tmp), _free(target.parent)) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _size(path: Path) -> int | None:
    """Bytes written so far (a lower bound of what the file needs), or None."""
    try:
        return path.stat().st_size or None
    except OSError:
        return None


def _free(folder: Path) -> int | None:
    """Free bytes on the folder's drive (of the nearest existing parent), or None."""
    for p in (folder, *folder.parents):
        try:
            return shutil.disk_usage(p).free
        except OSError:
            continue
    return None


def write_text_atomic(target: Path, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    data = text.encode("utf-8")
    with atomic_path(target, len(data)) as tmp:
        tmp.write_bytes(data)


def check_free_space(folder: Path, needed: int, label: str) -> None:
    """Before a long job: `folder` (called `label` in messages) accepts a new file and its drive has `needed`
    bytes free; else a `DiskFullError` or a `LorakitError` naming the folder and the bytes."""
    probe = temp_name(folder / "write-test")
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(folder, needed, _free(folder), f"for the {label}") from exc
        raise LorakitError(f"cannot write to the {label} {folder}: {exc.strerror or exc}",
                           "check the folder's permissions or choose another output.output_dir") from exc
    finally:
        probe.unlink(missing_ok=True)
    free = _free(folder)
    if free is not None and free < needed:
        raise DiskFullError(folder, needed, free, f"for the {label}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine (unknown counts as alive: nothing is removed)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None, min_age: float = STALE_TEMP_AGE_S) -> bool:
    """A temporary file of ours whose writer is gone: untouched for `min_age` seconds (10 minutes) and its process
    is dead or it names no process (older lorakit); or another machine's, untouched for a week."""
    m = TEMP_PATTERN.match(path.name)
    if not m:
        return False
    try:
        age = (now or time.time()) - path.stat().st_mtime
    except OSError:
        return False
    if m["pid"] is not None and m["host"] != _host():
        return age > FOREIGN_TEMP_AGE_S
    return age >= min_age and (m["pid"] is None or not pid_alive(int(m["pid"])))


def remove_stale_temps(paths: Iterable[Path], min_age: float = STALE_TEMP_AGE_S) -> int:
    """Delete the stale temporary files among `paths` (others are left alone); returns how many were removed."""
    removed = 0
    for p in paths:
        if is_stale_temp(p, min_age=min_age):
            try:
                if p.is_dir() and not p.is_symlink():  # a checkpoint folder being written
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed += 1
            except FileNotFoundError:
                continue
    return removed


def temps_under(folder: Path, depth: int) -> Iterator[Path]:
    """Candidate temporary files and folders (`.*.tmp`) in `folder` and its sub-folders down to `depth` levels;
    symlinked folders are not entered (nothing outside the folder the user named is touched)."""
    top = len(folder.parts)
    for root, dirs, files in os.walk(folder, followlinks=False):
        temp_dirs = [d for d in dirs if d.startswith(".") and d.endswith(".tmp")]
        dirs[:] = [] if len(Path(root).parts) - top >= depth else [d for d in dirs if d not in temp_dirs]
        yield from (Path(root) / f for f in [*files, *temp_dirs] if f.startswith(".") and f.endswith(".tmp"))


LOCK_NAME = ".lorakit.lock"


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold `folder/.lorakit.lock` (host and pid) while a run trains in it: a second process resuming the same run
    is refused instead of both writing. A lock whose process is gone (killed) is taken over."""
    lock = folder / LOCK_NAME
    me = f"{_host()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            try:
                host, pid = lock.read_text(encoding="utf-8").split()
            except (OSError, ValueError):
                host, pid = "", "0"
            if host == _host() and pid.isdigit() and not pid_alive(int(pid)):
                lock.unlink(missing_ok=True)  # its writer was killed: take it over
                continue
            raise LorakitError(f"{folder} is in use by another lorakit process ({host or 'unknown host'}, pid "
                               f"{pid})", f"wait for that run to end or stop it; if it no longer runs, delete {lock}"
                               ) from None
    else:
        raise LorakitError(f"cannot take the lock {lock}", f"delete {lock} if no lorakit process uses {folder}")
    try:
        os.write(fd, me.encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)
