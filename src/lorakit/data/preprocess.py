"""`lorakit prepare`: a raw, messy image folder → a normalized folder of upright RGB PNGs with their captions.

The raw folder is only read. Every output is written to a temporary name and renamed. Bad files are copied to
`<out>/rejected/` with a reason in `<out>/preprocess_log.csv`; re-running skips files whose size, mtime (or
content hash) and settings are unchanged.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import imagehash
import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from .scan import CAPTION_EXTENSIONS, IMAGE_EXTENSIONS, PREPARE_LOG, REJECTED_DIR, is_hidden
from .transforms import RGB, WHITE, decode

_TEMP = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
DATA_EXTENSIONS = frozenset({".csv", ".json", ".jsonl"})
Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PrepareOptions:
    """How `prepare` normalizes images."""

    background: RGB = WHITE
    max_side: int | None = None
    min_side: int = 256
    dedupe: bool = True
    dedupe_distance: int = 4
    blur_threshold: float = 60.0
    workers: int = 4
    png_compress_level: int = 1

    def fingerprint(self) -> str:
        """What changes the output pixels or the verdicts; a change re-processes every file."""
        return f"bg={self.background};max={self.max_side};min={self.min_side};blur={self.blur_threshold}"


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
    settings: str = ""
    captions: str = ""

    def reject(self, reason: str) -> LogRow:
        """Mark the row rejected with a reason ('code: detail')."""
        self.status, self.ok, self.reason, self.output = "rejected", 0, reason, ""
        return self


LOG_COLUMNS = [f.name for f in fields(LogRow)]


@dataclass
class PrepareReport:
    """What a `prepare` run did."""

    out: Path
    rows: list[LogRow]
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        """Images in the normalized folder."""
        return sum(r.ok for r in self.rows)

    @property
    def rejected(self) -> list[LogRow]:
        """Rows of rejected files."""
        return [r for r in self.rows if not r.ok]

    @property
    def log_path(self) -> Path:
        """The `preprocess_log.csv` written."""
        return self.out / PREPARE_LOG


@dataclass
class _Result:
    row: LogRow
    temp: Path | None = None


def read_log(path: Path) -> dict[str, LogRow]:
    """Rows of an existing log by source; an unreadable or foreign log is ignored (everything is re-processed)."""
    if not path.is_file():
        return {}
    rows: dict[str, LogRow] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for raw in csv.DictReader(f):
                values = {k: raw.get(k) or "" for k in LOG_COLUMNS}
                for k in ("ok", "width_before", "height_before", "width_after", "height_after", "bytes", "mtime_ns"):
                    values[k] = int(values[k] or 0)
                rows[values["source"]] = LogRow(**values)
    except (OSError, ValueError, csv.Error):
        return {}
    return rows


def write_log(path: Path, rows: list[LogRow]) -> None:
    """Write the log atomically."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    os.replace(tmp, path)


def grey_thumbnail(im: Image.Image, side: int = 512) -> Image.Image:
    """Greyscale copy with the long side at most `side` (what the sharpness and hash checks look at)."""
    grey = im.convert("L")
    grey.thumbnail((side, side))
    return grey


def laplacian_variance(im: Image.Image) -> float:
    """Sharpness: variance of the 4-neighbour Laplacian of the greyscale image (long side ≤ 512)."""
    grey = im if im.mode == "L" and max(im.size) <= 512 else grey_thumbnail(im)
    a = np.asarray(grey, dtype=np.float32)
    if a.shape[0] < 3 or a.shape[1] < 3:
        return 0.0
    lap = a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4 * a[1:-1, 1:-1]
    return float(lap.var())


def _decode_checked(data: bytes, opts: PrepareOptions) -> tuple[Image.Image, tuple[int, int]]:
    """Decode bytes, translating decoder failures into reasons."""
    try:
        return decode(io.BytesIO(data), opts.background)  # type: ignore[arg-type]
    except Image.DecompressionBombError as exc:
        raise _Rejected(f"too_large: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise _Rejected("corrupt: not a readable image (unknown or damaged format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise _Rejected(f"corrupt: {exc or type(exc).__name__} (truncated or damaged file)") from exc


class _Rejected(Exception):
    pass


def output_name(rel: str, taken: set[str]) -> str:
    """Output path of a source: same folders, `.png`; a clash (a.jpg and a.png) adds the old extension."""
    p = Path(rel)
    name, n = p.with_suffix(".png").as_posix(), 1
    while name in taken:
        tag = p.suffix.lstrip(".").lower() + (str(n) if n > 1 else "")
        name, n = p.with_name(f"{p.stem}_{tag}.png").as_posix(), n + 1
    taken.add(name)
    return name


def process_one(raw: Path, out: Path, row: LogRow, opts: PrepareOptions) -> _Result:
    """Decode, check and normalize one source file, writing its PNG to a temporary name beside the target."""
    src = raw / row.source
    if Path(row.source).suffix.lower() not in IMAGE_EXTENSIONS:
        return _Result(row.reject(f"unsupported: '{Path(row.source).suffix or row.source}' files are not "
                                  f"images lorakit reads; convert it to PNG or JPEG"))
    data = src.read_bytes()
    row.sha1 = hashlib.sha1(data).hexdigest()
    try:
        im, stored = _decode_checked(data, opts)
    except _Rejected as exc:
        return _Result(row.reject(str(exc)))
    row.width_before, row.height_before = stored
    if min(im.size) < opts.min_side:
        return _Result(row.reject(f"too_small: {im.width}x{im.height}, shorter side below the minimum "
                                  f"{opts.min_side} (lower --min-side to keep it)"))
    if opts.max_side and max(im.size) > opts.max_side:
        scale = opts.max_side / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    row.width_after, row.height_after = im.size
    thumb = grey_thumbnail(im)
    row.phash = str(imagehash.phash(thumb))
    sharpness = laplacian_variance(thumb)
    if opts.blur_threshold and sharpness < opts.blur_threshold:
        row.warning = f"blurry: sharpness {sharpness:.1f} below {opts.blur_threshold:g}"
    target = out / row.output
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    if im.size == stored and is_plain_png(data):
        temp.write_bytes(data)  # already an upright 8-bit RGB PNG: the same pixels, no re-encoding
    else:
        im.save(temp, "PNG", compress_level=opts.png_compress_level)
    return _Result(row, temp)


def is_plain_png(data: bytes) -> bool:
    """An 8-bit RGB PNG with no transparency, colour profile, EXIF or animation: its bytes can be kept as they are."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            ihdr_8bit_rgb = data[24:26] == bytes([8, 2])  # IHDR bit depth 8, colour type 2 (truecolour)
            return (im.format == "PNG" and ihdr_8bit_rgb and getattr(im, "n_frames", 1) == 1
                    and not {"transparency", "icc_profile", "exif"} & set(im.info))
    except (OSError, ValueError, SyntaxError):
        return False


def _check_folders(raw: Path, out: Path) -> None:
    if not raw.is_dir():
        raise DataError(f"raw image folder not found: {raw}", "pass the folder that holds your images")
    r, o = raw.resolve(), out.resolve()
    if r == o or r in o.parents or o in r.parents:
        raise DataError(
            f"output folder {out} overlaps the raw folder {raw}",
            "choose an output folder outside the raw folder (the raw folder is never modified)",
        )
    if (raw / REJECTED_DIR).is_dir():
        raise DataError(f"{raw} has a top-level '{REJECTED_DIR}' folder, a name prepare uses for rejected files",
                        "rename that folder")


def list_sources(raw: Path) -> tuple[list[str], list[str]]:
    """(files to process, data files to copy) under `raw`, relative and sorted; hidden files and captions skipped."""
    sources, data = [], []
    for p in raw.rglob("*"):
        rel = p.relative_to(raw)
        if is_hidden(rel.parts) or not p.is_file():
            continue
        ext = p.suffix.lower()
        if ext in CAPTION_EXTENSIONS:
            continue
        (data if ext in DATA_EXTENSIONS else sources).append(rel.as_posix())
    return sorted(sources), sorted(data)


def _reusable(prev: LogRow | None, src: Path, stat: os.stat_result, out: Path, settings: str) -> bool:
    if prev is None or prev.settings != settings or prev.bytes != stat.st_size:
        return False
    if prev.ok and not (out / prev.output).is_file():
        return False
    if prev.reason.startswith("duplicate") and not prev.phash:
        return False
    if prev.mtime_ns == stat.st_mtime_ns:
        return True
    return bool(prev.sha1) and hashlib.sha1(src.read_bytes()).hexdigest() == prev.sha1


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits per uint64."""
    if hasattr(np, "bitwise_count"):  # numpy ≥ 2
        return np.bitwise_count(values)
    return np.unpackbits(values.view(np.uint8)).reshape(-1, 64).sum(axis=1)


def dedupe(rows: list[LogRow], distance: int) -> None:
    """Reject later images (in source order) whose perceptual hash is within `distance` bits of a kept one."""
    kept = np.zeros(len(rows), dtype=np.uint64)
    names: list[str] = []
    for row in rows:
        if not row.phash or not (row.ok or row.reason.startswith("duplicate")):
            continue
        value = np.uint64(int(row.phash, 16))
        close = np.flatnonzero(_popcount(kept[: len(names)] ^ value) <= distance)
        if close.size:
            row.reject(f"duplicate: same picture as {names[close[0]]}")
            continue
        row.status, row.ok, row.reason = "ok", 1, ""
        kept[len(names)] = value
        names.append(row.source)


def _copy_if_changed(src: Path, dst: Path) -> bool:
    """Copy a small file atomically unless `dst` already has the same bytes; returns whether it copied."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size and dst.read_bytes() == src.read_bytes():
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return True


def _copy_captions(raw: Path, out: Path, row: LogRow) -> None:
    """Copy the source's caption files beside its output when they changed since the last run (`row.captions`
    holds their hash), so captions edited in the output folder survive a re-run until the raw ones change."""
    src, dst = raw / row.source, out / row.output
    sides = [(ext, src.with_suffix(ext)) for ext in CAPTION_EXTENSIONS if src.with_suffix(ext).is_file()]
    h = hashlib.sha1()
    for ext, side in sides:
        h.update(ext.encode() + b"\x00" + side.read_bytes() + b"\x00")
    digest = h.hexdigest() if sides else ""
    if digest == row.captions and all(dst.with_suffix(ext).is_file() for ext, _ in sides):
        return
    for ext, side in sides:
        _copy_if_changed(side, dst.with_suffix(ext))
    row.captions = digest


def _remove_output(out: Path, output: str) -> bool:
    target = out / output
    removed = False
    for path in [target] + [target.with_suffix(e) for e in CAPTION_EXTENSIONS]:
        if path.is_file():
            path.unlink()
            removed = True
    return removed


def remove_stale_temps(out: Path) -> int:
    """Delete temporary files an interrupted run left behind (only names this module creates)."""
    stale = [p for p in out.rglob(".*.tmp") if _TEMP.match(p.name)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def prepare(raw: Path, out: Path, opts: PrepareOptions | None = None, on_progress: Progress | None = None
            ) -> PrepareReport:
    """Normalize `raw` into `out` (see the module docstring); returns what was done."""
    opts = opts or PrepareOptions()
    raw, out = Path(raw), Path(out)
    _check_folders(raw, out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    previous = read_log(out / PREPARE_LOG)
    before = {src: dataclasses.replace(row) for src, row in previous.items()}  # reused rows are updated in place
    sources, data_files = list_sources(raw)
    settings, taken = opts.fingerprint(), set()
    rows: dict[str, LogRow] = {}
    todo: list[LogRow] = []
    report = PrepareReport(out, [])
    for rel in sources:
        stat = (raw / rel).stat()
        prev = previous.get(rel)
        if _reusable(prev, raw / rel, stat, out, settings):
            assert prev is not None
            prev.mtime_ns = stat.st_mtime_ns
            rows[rel] = prev
            if prev.output:
                taken.add(prev.output)
            report.unchanged += 1
        else:
            rows[rel] = LogRow(source=rel, bytes=stat.st_size, mtime_ns=stat.st_mtime_ns, settings=settings,
                               captions=prev.captions if prev else "")
            todo.append(rows[rel])
    for row in todo:
        row.output = output_name(row.source, taken)
    temps = _process_all(raw, out, todo, opts, on_progress, len(sources) - len(todo), len(sources))
    ordered = [rows[rel] for rel in sources]
    if opts.dedupe:
        dedupe(ordered, opts.dedupe_distance)
    else:
        for row in ordered:
            if row.reason.startswith("duplicate"):
                row.status, row.ok, row.reason = "ok", 1, ""
    for row in ordered:
        if row.ok and not row.output:  # a former duplicate that is kept now
            row.output = output_name(row.source, taken)
    _commit(raw, out, ordered, temps, before, opts, report)
    for rel in data_files:
        _copy_if_changed(raw / rel, out / rel)
    report.rows = ordered
    report.warnings = [f"{r.source}: {r.warning}" for r in ordered if r.ok and r.warning]
    write_log(out / PREPARE_LOG, ordered)
    return report


def _process_all(raw: Path, out: Path, todo: list[LogRow], opts: PrepareOptions, on_progress: Progress | None,
                 done: int, total: int) -> dict[str, Path]:
    """Process rows in parallel threads (Pillow releases the GIL while decoding and encoding)."""
    temps: dict[str, Path] = {}
    if on_progress:
        on_progress(done, total, "")
    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:
        for result in pool.map(lambda r: process_one(raw, out, r, opts), todo):
            if result.temp is not None:
                temps[result.row.source] = result.temp
            done += 1
            if on_progress:
                on_progress(done, total, result.row.source)
    return temps


def _commit(raw: Path, out: Path, rows: list[LogRow], temps: dict[str, Path], before: dict[str, LogRow],
            opts: PrepareOptions, report: PrepareReport) -> None:
    """Rename kept outputs into place, drop rejected ones, copy rejected sources aside, then remove what the
    previous run wrote and this one no longer produces. `before` is the previous log, as it was read."""
    for row in rows:
        temp = temps.pop(row.source, None)
        if row.ok and temp is None and not (out / row.output).is_file():  # a former duplicate whose twin is gone
            temp = process_one(raw, out, row, opts).temp
        if row.ok and temp is not None:
            os.replace(temp, out / row.output)
            report.written += 1
        elif temp is not None:
            temp.unlink()
        if row.ok:
            _copy_captions(raw, out, row)
        else:
            _copy_if_changed(raw / row.source, out / REJECTED_DIR / row.source)
    outputs = {r.output for r in rows if r.ok}
    rejected = {r.source for r in rows if not r.ok}
    for old in before.values():
        if old.ok and old.output and old.output not in outputs:
            report.removed += _remove_output(out, old.output)
        stale = out / REJECTED_DIR / old.source
        if not old.ok and old.source not in rejected and stale.is_file():
            stale.unlink()
