"""`preprocess_log.csv` and `preprocess_meta.json`: what `prepare` wrote, read back to skip unchanged files and to
know which files in the output folder are its own."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..errors import DataError
from ..io import atomic_path, write_text_atomic
from .scan import REJECTED_DIR

PREPARE_META = "preprocess_meta.json"  # {"raw": resolved raw folder, "data_files": copied metadata files}
REUSE_HINT = "use an empty folder, or the folder of a previous prepare of this raw folder"


@dataclass
class LogRow:
    """One line of `preprocess_log.csv`."""

    source: str
    output: str = ""
    status: str = "ok"  # ok | rejected
    ok: int = 1
    reason: str = ""
    warning: str = ""
    width_before: int = 0
    height_before: int = 0
    width_after: int = 0
    height_after: int = 0
    bytes: int = 0
    mtime_ns: int = 0
    sha1: str = ""
    phash: str = ""
    colour: str = ""  # colour thumbnail (similarity.colour_signature); duplicates need a close hash and colour
    settings: str = ""
    captions: str = ""

    def reject(self, reason: str) -> LogRow:
        """Mark the row rejected with a reason ('code: detail')."""
        self.status, self.ok, self.reason, self.output = "rejected", 0, reason, ""
        return self


LOG_COLUMNS = [f.name for f in fields(LogRow)]


def _inside(root: Path, rel: str) -> bool:
    """Whether `root/rel` stays inside `root` (no absolute path, `..` or symlink leading out)."""
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        return False
    try:
        (root / rel).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def read_log(path: Path) -> dict[str, LogRow]:
    """Rows of an existing log by source ({} when there is none); a garbled log, or one naming a path outside its
    folder, is a `DataError` (it says which files are ours, so guessing could delete or overwrite the user's)."""
    if not path.exists():
        return {}
    out, rows = path.parent, {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"source", "output", "status", "ok"} <= set(reader.fieldnames or ()):
                raise ValueError("missing columns (source, output, status, ok)")
            for raw in reader:
                values = {k: raw.get(k) or "" for k in LOG_COLUMNS}
                for k in ("ok", "width_before", "height_before", "width_after", "height_after", "bytes", "mtime_ns"):
                    values[k] = int(values[k] or 0)
                row = LogRow(**values)
                if not row.source or (row.status, row.ok) not in {("ok", 1), ("rejected", 0)}:
                    raise ValueError(f"bad row for {row.source!r}")
                if not _inside(out, row.output) or not _inside(out / REJECTED_DIR, row.source):
                    raise ValueError(f"row {row.source!r} names a path outside {out}")
                rows[row.source] = row
    except (OSError, ValueError, csv.Error) as exc:
        raise DataError(f"cannot read the prepare log {path}: {exc}",
                        "restore it, or prepare into an empty folder") from exc
    return rows


def read_meta(out: Path, raw: Path) -> list[str]:
    """Check `out` was prepared from `raw`; returns the metadata files the last run copied."""
    path = out / PREPARE_META
    if not path.is_file():
        return []  # a folder prepared before the raw folder was recorded
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        recorded, data_files = str(meta["raw"]), [str(d) for d in meta.get("data_files", [])]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read {path}: {exc}", "restore it, or prepare into an empty folder") from exc
    if recorded != str(raw.resolve()):
        raise DataError(f"{out} was prepared from another raw folder ({recorded}), not {raw.resolve()}", REUSE_HINT)
    return [d for d in data_files if _inside(out, d)]


def _write_meta(out: Path, raw: Path, data_files: list[str]) -> None:
    write_text_atomic(out / PREPARE_META, json.dumps({"raw": str(raw.resolve()), "data_files": data_files}, indent=1))


def write_log(path: Path, rows: list[LogRow]) -> None:
    """Write the log atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
