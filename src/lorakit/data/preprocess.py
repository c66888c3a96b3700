"""`lorakit prepare`: a raw, messy image folder → a normalized folder of upright RGB PNGs with their captions.

The raw folder is only read. Every output is written to a temporary name and renamed. Bad files are copied to
`<out>/rejected/` with a reason in `<out>/preprocess_log.csv`; re-running skips files whose size, mtime (or
content hash) and settings are unchanged.

Nothing a user made is lost: an existing file `prepare` did not write is never overwritten (the run is refused),
a caption edited in the output folder is moved to `rejected/` rather than deleted or overwritten, an image kept by
an earlier run stays kept when a near-duplicate is added, and paths in the log never reach outside `out`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import imagehash
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..io import atomic_path, remove_stale_temps as _remove_stale, temp_name
from .prepare_log import REUSE_HINT as _HINT, PREPARE_META, LogRow, _write_meta, read_log, read_meta, write_log
from .scan import CAPTION_EXTENSIONS, IMAGE_EXTENSIONS, PREPARE_LOG, REJECTED_DIR
from .similarity import colour_signature, dedupe, grey_thumbnail, laplacian_variance
from .transforms import RGB, WHITE, decode

CHECKPOINT_EVERY = 64  # processed files between two commits of outputs and log during a run
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
class PrepareReport:
    """What a `prepare` run did."""

    out: Path
    rows: list[LogRow]
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    warnings: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)  # edited captions (and their images) moved to rejected/

    @property
    def ok(self) -> int:
        """Images in the normalized folder."""
        return sum(r.ok for r in self.rows)

    @property
    def rejected(self) -> list[LogRow]:
        """Rows of rejected files."""
        return [r for r in self.rows if r.status == "rejected"]

    @property
    def log_path(self) -> Path:
        """The `preprocess_log.csv` written."""
        return self.out / PREPARE_LOG


@dataclass
class _Result:
    row: LogRow
    temp: Path | None = None


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
    try:
        data = (raw / row.source).read_bytes()
    except OSError as exc:
        return _Result(row.reject(f"unreadable: {exc.strerror or exc} (check the file's permissions)"))
    row.sha1 = hashlib.sha1(data).hexdigest()
    if Path(row.source).suffix.lower() not in IMAGE_EXTENSIONS:
        return _Result(row.reject(f"unsupported: '{Path(row.source).suffix or row.source}' files are not "
                                  f"images lorakit reads; convert it to PNG or JPEG"))
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
    row.phash, row.colour = str(imagehash.phash(thumb)), colour_signature(im)
    sharpness = laplacian_variance(thumb)
    if opts.blur_threshold and sharpness < opts.blur_threshold:
        row.warning = f"blurry: sharpness {sharpness:.1f} below {opts.blur_threshold:g}"
    target = out / row.output
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_name(target)
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
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file, not a folder", "pass a folder (it is created if missing)")
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


def list_sources(raw: Path) -> tuple[list[str], list[str], dict[str, str]]:
    """(files to process, data files to copy, {folder: why} for folders that cannot be listed) under `raw`,
    relative and sorted; hidden files and folders and captions are skipped. The raw folder itself is '.'."""
    sources, data, unreadable = [], [], {}

    def failed(exc: OSError) -> None:
        folder = Path(exc.filename).relative_to(raw).as_posix() if exc.filename else "."
        unreadable[folder] = exc.strerror or str(exc)

    for root, dirs, files in os.walk(raw, onerror=failed):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            p = Path(root) / name
            rel = p.relative_to(raw).as_posix()
            if name.startswith(".") or rel in (PREPARE_LOG, PREPARE_META) or not p.is_file():
                continue
            ext = p.suffix.lower()
            if ext in CAPTION_EXTENSIONS:
                continue
            (data if ext in DATA_EXTENSIONS else sources).append(rel)
    return sorted(sources), sorted(data), dict(sorted(unreadable.items()))


def _under(source: str, folders: dict[str, str]) -> bool:
    return any(f == "." or source.startswith(f + "/") for f in folders)


def _reusable(prev: LogRow | None, src: Path, stat: os.stat_result, out: Path, settings: str) -> bool:
    if prev is None or prev.settings != settings or prev.bytes != stat.st_size:
        return False
    if prev.ok and not (out / prev.output).is_file():
        return False
    if (prev.phash or prev.reason.startswith("duplicate")) and not prev.colour:  # judged before colour counted
        return False
    if prev.reason.startswith("unreadable"):
        return False
    if prev.mtime_ns == stat.st_mtime_ns:
        return True
    try:
        return bool(prev.sha1) and hashlib.sha1(src.read_bytes()).hexdigest() == prev.sha1
    except OSError:
        return False  # process_one rejects it as unreadable


def _same(a: Path, b: Path) -> bool:
    """Both are files with the same bytes."""
    return a.is_file() and b.is_file() and a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def _copy_if_changed(src: Path, dst: Path) -> bool:
    """Copy a small file atomically unless `dst` already has the same bytes; returns whether it copied."""
    if _same(src, dst):
        return False
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return True


def _caption_sides(image: Path) -> tuple[str, list[tuple[str, Path]]]:
    """(hash, [(extension, path)]) of the caption files beside an image; the hash is '' when there are none."""
    sides = [(ext, image.with_suffix(ext)) for ext in CAPTION_EXTENSIONS if image.with_suffix(ext).is_file()]
    h = hashlib.sha1()
    for ext, side in sides:
        h.update(ext.encode() + b"\x00" + side.read_bytes() + b"\x00")
    return (h.hexdigest() if sides else ""), sides


def _edited(raw: Path, out: Path, source: str, output: str, captions: str) -> bool:
    """Whether the captions beside `output` differ from what prepare copied (`captions`, the hash of the raw
    ones then) and from the raw captions now: the user wrote them."""
    digest, sides = _caption_sides(out / output)
    return bool(sides) and digest != captions and not all(
        _same(side, (raw / source).with_suffix(ext)) for ext, side in sides)


def _set_aside(out: Path, paths: list[Path], report: PrepareReport, why: str) -> None:
    """Move files (an image and/or its captions) to `<out>/rejected/` under one unused name; never overwrites."""
    paths = [p for p in paths if p.is_file()]
    rel = paths[0].relative_to(out)
    folder, n = out / REJECTED_DIR / rel.parent, 0
    stem = rel.stem
    while any((folder / f"{stem}{p.suffix}").exists() for p in paths):
        n += 1
        stem = f"{rel.stem}_{n}"
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        os.rename(p, folder / f"{stem}{p.suffix}")
    moved = ", ".join((folder / f"{stem}{p.suffix}").relative_to(out).as_posix() for p in paths)
    report.set_aside.append(moved)
    report.warnings.append(f"{rel.as_posix()}: {why}; moved to {moved}")


def _copy_captions(raw: Path, out: Path, row: LogRow, report: PrepareReport) -> None:
    """Copy the source's caption files beside its output when they changed since the last run (`row.captions`
    holds their hash), so captions edited in the output folder survive a re-run until the raw ones change; then
    the edited ones are moved to `rejected/` first, never overwritten."""
    src, dst = raw / row.source, out / row.output
    digest, sides = _caption_sides(src)
    if digest == row.captions:  # raw captions unchanged: only restore missing copies, never touch existing ones
        for ext, side in sides:
            if not dst.with_suffix(ext).exists():
                _copy_if_changed(side, dst.with_suffix(ext))
        return
    if sides and _edited(raw, out, row.source, row.output, row.captions):
        _set_aside(out, [dst.with_suffix(ext) for ext in CAPTION_EXTENSIONS], report,
                   "caption edited in the output, but the raw caption changed")
    for ext, side in sides:
        _copy_if_changed(side, dst.with_suffix(ext))
    row.captions = digest


def _remove_output(raw: Path, out: Path, old: LogRow, report: PrepareReport) -> None:
    """Remove an output this run no longer produces; with captions edited in the output, move it aside instead."""
    target = out / old.output
    files = [target] + [target.with_suffix(e) for e in CAPTION_EXTENSIONS]
    if _edited(raw, out, old.source, old.output, old.captions):
        _set_aside(out, files, report, "no longer produced, but its caption was edited in the output")
        return
    removed = False
    for path in files:
        if path.is_file():
            path.unlink()
            removed = True
    report.removed += removed


def remove_stale_temps(out: Path) -> int:
    """Delete temporary files an interrupted run left behind (only names lorakit creates, and only when the process
    that wrote one is gone). At once, not after lorakit.io's idle time: a prepared folder has one writer, the
    `prepare` that holds it now, so a re-run right after an interrupt cleans up."""
    return _remove_stale(out.rglob(".*.tmp"), min_age=0)  # io.is_stale_temp matches lorakit's temp names


def _open_out(raw: Path, out: Path) -> tuple[dict[str, LogRow], list[str]]:
    """Create `out` or check it is a previous prepare of `raw`: (previous log rows, metadata files copied)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the output folder {out}: {exc.strerror or exc}",
                        "check the parent folder exists and is writable") from exc
    remove_stale_temps(out)
    if not (out / PREPARE_LOG).exists():
        if any(not p.is_dir() for p in out.rglob("*")):  # empty folders hold nothing to lose
            raise DataError(f"output folder {out} is not empty and has no {PREPARE_LOG}: prepare would overwrite "
                            "files it did not write", _HINT)
        write_log(out / PREPARE_LOG, [])  # an interrupted first run still leaves the folder marked as ours
        _write_meta(out, raw, [])
        return {}, []
    previous = read_log(out / PREPARE_LOG)
    return previous, read_meta(out, raw)


def _check_clashes(raw: Path, out: Path, rows: list[LogRow], temps: dict[str, Path], before: dict[str, LogRow],
                   data_files: list[str], known_data: list[str]) -> None:
    """Refuse before changing anything when a file would replace one the previous run did not write."""
    old_outputs = {r.output for r in before.values() if r.ok}
    old_rejected = {r.source for r in before.values() if not r.ok}
    plans: list[tuple[Path, Path | None]] = [(out / rel, raw / rel) for rel in data_files if rel not in known_data]
    for row in rows:
        if row.ok and row.output not in old_outputs:
            plans.append((out / row.output, temps.get(row.source)))
            plans += [((out / row.output).with_suffix(e), side) for e, side in _caption_sides(raw / row.source)[1]]
        elif not row.ok and row.source not in old_rejected and not row.reason.startswith("unreadable"):
            plans.append((out / REJECTED_DIR / row.source, raw / row.source))
    clashes = [dst for dst, src in plans if dst.exists() and (src is None or not _same(dst, src))]
    if clashes:
        for temp in temps.values():
            temp.unlink(missing_ok=True)
        names = ", ".join(str(c) for c in clashes[:5]) + (f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else "")
        raise DataError(f"{out} already holds files prepare did not write and would overwrite: {names}", _HINT)


def prepare(raw: Path, out: Path, opts: PrepareOptions | None = None, on_progress: Progress | None = None
            ) -> PrepareReport:
    """Normalize `raw` into `out` (see the module docstring); returns what was done. I/O errors are `DataError`s."""
    raw, out = Path(raw), Path(out)
    try:
        return _prepare(raw, out, opts or PrepareOptions(), on_progress)
    except OSError as exc:
        raise DataError(f"prepare failed on {exc.filename or out}: {exc.strerror or exc}",
                        "check the file's permissions and the free disk space, then run prepare again") from exc


def _prepare(raw: Path, out: Path, opts: PrepareOptions, on_progress: Progress | None) -> PrepareReport:
    _check_folders(raw, out)
    previous, known_data = _open_out(raw, out)
    sources, data_files, unreadable = list_sources(raw)
    report = PrepareReport(out, [], warnings=[f"{d}/: folder cannot be read ({why}); its files were skipped "
                                              "(check its permissions)" for d, why in unreadable.items()])
    held = [previous.pop(src) for src in sorted(previous) if _under(src, unreadable)]  # kept as they were
    report.unchanged += len(held)
    before = {src: dataclasses.replace(row) for src, row in previous.items()}  # reused rows are updated in place
    settings, taken = opts.fingerprint(), {r.output for r in held if r.output}
    rows: dict[str, LogRow] = {}
    todo: list[LogRow] = []
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
    kept_before, known, checkpointed = frozenset(r.source for r in before.values() if r.ok), set(before), set()
    temps = _process_all(raw, out, todo, opts, on_progress, len(sources) - len(todo), len(sources),
                         lambda batch, temps: checkpointed.update(_checkpoint(out, batch, temps, before, held, opts)))
    ordered = [rows[rel] for rel in sources]
    if opts.dedupe:
        dedupe(ordered, opts.dedupe_distance, kept_before)
    else:
        for row in ordered:
            if row.reason.startswith("duplicate"):
                row.status, row.ok, row.reason = "ok", 1, ""
    for row in ordered:
        if row.ok and not row.output:  # a former duplicate that is kept now
            row.output = output_name(row.source, taken)
        if row.ok and row.source not in temps and not (out / row.output).is_file():  # its twin is gone
            result = process_one(raw, out, row, opts)
            if result.temp is not None:
                temps[row.source] = result.temp
    _check_clashes(raw, out, ordered, temps, before, data_files, known_data)
    _commit(raw, out, ordered, temps, before, report)
    report.written += sum(rows[src].ok for src in checkpointed)  # a checkpointed duplicate was not kept after all
    report.removed -= sum(not rows[src].ok for src in checkpointed - known)
    for rel in data_files:
        _copy_if_changed(raw / rel, out / rel)
    report.rows = sorted(ordered + held, key=lambda r: r.source)
    report.warnings += [f"{r.source}: {r.warning}" for r in ordered if r.ok and r.warning]
    write_log(out / PREPARE_LOG, report.rows)
    _write_meta(out, raw, sorted(set(known_data) | set(data_files)))
    return report


def _process_all(raw: Path, out: Path, todo: list[LogRow], opts: PrepareOptions, on_progress: Progress | None,
                 done: int, total: int, checkpoint: Callable[[list[LogRow], dict[str, Path]], None]
                 ) -> dict[str, Path]:
    """Process rows in parallel threads (Pillow releases the GIL while decoding and encoding), handing every
    CHECKPOINT_EVERY processed rows to `checkpoint` so an interrupted run keeps what it did."""
    temps: dict[str, Path] = {}
    batch: list[LogRow] = []
    if on_progress:
        on_progress(done, total, "")
    with ThreadPoolExecutor(max_workers=max(1, opts.workers)) as pool:
        for result in pool.map(lambda r: process_one(raw, out, r, opts), todo):
            if result.temp is not None:
                temps[result.row.source] = result.temp
            batch.append(result.row)
            if len(batch) >= CHECKPOINT_EVERY:
                checkpoint(batch, temps)
                batch = []
            done += 1
            if on_progress:
                on_progress(done, total, result.row.source)
    return temps


def _checkpoint(out: Path, batch: list[LogRow], temps: dict[str, Path], before: dict[str, LogRow],
                held: list[LogRow], opts: PrepareOptions) -> set[str]:
    """Move the new outputs of `batch` into place and log them (with the previous log's rows), so a re-run after an
    interrupt skips them. Only outputs that replace nothing but this source's own earlier output, and that are not
    near-duplicates of an image kept before, are moved; the rest wait for the end of the run. Their rows join
    `before`, so the end of the run treats them like outputs of a previous run."""
    ready = [dataclasses.replace(r) for r in batch if r.source in temps and (
        before[r.source].ok and before[r.source].output == r.output if r.source in before
        else not (out / r.output).exists())]
    if opts.dedupe and ready:
        names = {r.source for r in ready}
        kept = [dataclasses.replace(r) for r in before.values() if r.ok and r.source not in names]
        dedupe(kept + ready, opts.dedupe_distance, frozenset(r.source for r in kept))
        ready = [r for r in ready if r.ok]
    for row in ready:
        os.replace(temps.pop(row.source), out / row.output)
        before[row.source] = row
    if ready:
        write_log(out / PREPARE_LOG, sorted([*before.values(), *held], key=lambda r: r.source))
    return {r.source for r in ready}


def _commit(raw: Path, out: Path, rows: list[LogRow], temps: dict[str, Path], before: dict[str, LogRow],
            report: PrepareReport) -> None:
    """Rename kept outputs into place, drop rejected ones, copy rejected sources aside, then remove what the
    previous run wrote and this one no longer produces. `before` is the previous log, as it was read."""
    for row in rows:
        temp = temps.pop(row.source, None)
        if row.ok and temp is not None:
            os.replace(temp, out / row.output)
            report.written += 1
        elif temp is not None:
            temp.unlink()
        if row.ok:
            _copy_captions(raw, out, row, report)
        elif not row.reason.startswith("unreadable"):  # what cannot be read cannot be copied
            _copy_if_changed(raw / row.source, out / REJECTED_DIR / row.source)
    outputs = {r.output for r in rows if r.ok}
    rejected = {r.source for r in rows if not r.ok}
    for old in before.values():
        if old.ok and old.output and old.output not in outputs:
            _remove_output(raw, out, old, report)
        stale = out / REJECTED_DIR / old.source
        if not old.ok and old.source not in rejected and old.sha1 and stale.is_file() \
                and hashlib.sha1(stale.read_bytes()).hexdigest() == old.sha1:  # only the copy prepare made
            stale.unlink()
