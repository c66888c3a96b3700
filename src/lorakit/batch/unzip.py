"""Safe extraction of the training ZIPs in `lorakit batch`'s working folder (spec §4.2 "ZIP解凍").

Each `name.zip` directly in the folder becomes the training folder `name/`; the ZIP is removed only after its
contents are in place. A ZIP is refused whole (nothing extracted, the ZIP kept, the reason names the entry) when it
could write outside its folder, is larger than allowed, lies about its sizes, is encrypted or is damaged. Extraction
goes into a hidden temp folder that is renamed into place, so a crash never leaves a half-extracted training folder
(dot-names are skipped by the folder scan).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lorakit.errors import DataError, DiskFullError, human_bytes, is_disk_full

_CHUNK = 1 << 20
_NO_CAP = 2**62  # "no size limit" for zipfile's reader; our own counter enforces the declared size
_DRIVE = re.compile(r"^[A-Za-z]:")  # C:\evil, C:/evil, C:evil
_MAC_JUNK_DIR, _MAC_JUNK_FILE = "__MACOSX", ".DS_Store"


@dataclass(frozen=True)
class ZipOutcome:
    zip: Path
    ok: bool
    folder: Path | None = None  # where its contents went (None when refused)
    reason: str = ""  # why it was refused ("" when ok)


class _Refused(Exception):
    """This ZIP must not be extracted; the message is the reason shown to the user."""


def extract_zips(folder: Path, max_bytes: int = 20 * 2**30, max_files: int = 100_000) -> list[ZipOutcome]:
    """Extract every `*.zip` directly in `folder` into `folder/<name>/` and remove it; refuse unsafe ones.

    Raises DiskFullError when the drive fills up (the next ZIPs would fail the same way); every other problem is
    reported in that ZIP's outcome and the other ZIPs are still extracted.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"batch working folder {folder} does not exist or is not a folder",
                        "check batch.working_directory in the config")
    zips = sorted(p for p in folder.iterdir()
                  if p.suffix.lower() == ".zip" and not p.name.startswith(".") and p.is_file())
    return [_extract_one(z, max_bytes, max_files) for z in zips]


def _extract_one(zip_path: Path, max_bytes: int, max_files: int) -> ZipOutcome:
    name = zip_path.name[:-len(".zip")]
    target = zip_path.parent / name
    if os.path.lexists(target):
        return ZipOutcome(zip_path, False, None, f"{target} already exists; the ZIP is kept and nothing is merged "
                          f"into or overwritten in that folder (rename or remove one of them and run again)")
    temp = zip_path.parent / f".{name}.extracting-{os.getpid()}"
    try:
        _remove(temp)  # left over by a crashed run with the same pid: ours by name
        with zipfile.ZipFile(zip_path) as archive:
            plan = _plan(archive, name, max_bytes, max_files)
            temp.mkdir()
            for info, parts in plan:
                _write_entry(archive, info, temp, parts)
        if os.path.lexists(target):  # appeared while we were extracting: still never merge
            raise _Refused(f"{target} appeared during extraction; the ZIP is kept")
        os.rename(temp, target)
    except Exception as exc:  # noqa: BLE001 — any failure must clean up and keep the ZIP
        _remove(temp)
        if is_disk_full(exc):
            raise DiskFullError(temp, what="extracting") from exc
        return ZipOutcome(zip_path, False, None, _reason(zip_path, exc))
    zip_path.unlink()
    return ZipOutcome(zip_path, True, target, "")


def _plan(archive: zipfile.ZipFile, name: str, max_bytes: int,
          max_files: int) -> list[tuple[zipfile.ZipInfo, tuple[str, ...]]]:
    """Check every entry before anything is written; return (entry, path parts inside the target) to extract."""
    infos = archive.infolist()
    if len(infos) > max_files:
        raise _Refused(f"it has {len(infos)} entries, more than the limit of {max_files}")
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise _Refused(f"its entries declare {human_bytes(total)} ({total} bytes) uncompressed, more than the "
                       f"limit of {human_bytes(max_bytes)} ({max_bytes} bytes)")
    kept: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    for info in infos:
        parts = _safe_parts(info)
        if parts and not (_MAC_JUNK_DIR in parts or parts[-1] == _MAC_JUNK_FILE):
            kept.append((info, parts))
    if not any(not info.is_dir() for info, _ in kept):
        raise _Refused("it holds no files (only folders or macOS metadata)")
    # zipping the folder `name/` puts every entry under `name/`: don't double that level. A single top-level folder
    # with another name (kohya's `10_cat/`) is part of the layout and stays.
    if all(parts[0] == name and (len(parts) > 1 or info.is_dir()) for info, parts in kept):
        kept = [(info, parts[1:]) for info, parts in kept if len(parts) > 1]
    return kept


def _safe_parts(info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The entry's path parts, or _Refused when it is absolute, climbs out, is a symlink or is encrypted."""
    entry = info.filename
    if entry.startswith("/") or _DRIVE.match(entry):
        raise _Refused(f"entry {entry!r} has an absolute path")
    if "\\" in entry:
        raise _Refused(f"entry {entry!r} uses backslashes in its path (Windows-style paths are not allowed)")
    parts = PurePosixPath(entry).parts
    if ".." in parts:
        raise _Refused(f"entry {entry!r} has a '..' component that points outside its folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise _Refused(f"entry {entry!r} is a symbolic link")
    if info.flag_bits & 0x1:
        raise _Refused(f"entry {entry!r} is encrypted (password-protected ZIPs are not supported)")
    return parts


def _write_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, root: Path, parts: tuple[str, ...]) -> None:
    dest = root.joinpath(*parts)
    real_root = os.path.realpath(root)
    if not os.path.realpath(dest).startswith(real_root + os.sep):
        raise _Refused(f"entry {info.filename!r} resolves outside its folder")
    if info.is_dir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    # zipfile cuts the output at the declared size and then fails the CRC check ("corrupt"). Lift its cap and ask
    # for at most one byte past the declared size: our counter then sees a header that lies as what it is.
    probe = copy.copy(info)
    probe.file_size = _NO_CAP
    written = 0
    try:
        with archive.open(probe) as source, open(dest, "xb") as sink:
            while chunk := source.read(min(_CHUNK, info.file_size - written + 1)):
                written += len(chunk)
                if written > info.file_size:
                    raise _Refused(f"entry {info.filename!r} decompresses to more than its declared size of "
                                   f"{info.file_size} bytes (a zip bomb or a damaged header)")
                sink.write(chunk)
    except FileExistsError:
        raise _Refused(f"entry {info.filename!r} appears twice in the ZIP") from None


def _reason(zip_path: Path, exc: BaseException) -> str:
    if isinstance(exc, _Refused):
        return str(exc)
    if isinstance(exc, (zipfile.BadZipFile, zlib.error, EOFError)):
        return f"the ZIP is corrupt or truncated ({exc}); download it again"
    if isinstance(exc, NotImplementedError):
        return f"it uses an unsupported ZIP feature ({exc}); re-create it with plain deflate compression"
    return f"extracting {zip_path.name} failed: {type(exc).__name__}: {exc}"


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
