"""Progress leaves the engine as events to callbacks; requests come in as commands. The engine never prints.

A failing callback (a logger, a UI) never kills a run: `CallbackList` reports its first error to the other
callbacks as a warning and goes on. The one exception is a full disk (`DiskFullError`): the CSV and run logs raise
it, and the run stops with a clear message instead of training on towards a save that cannot be written.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import DiskFullError, is_disk_full
from ..io import write_text_atomic

Clock = Callable[[], float]
Now = Callable[[], datetime]
PLAIN_EVERY_FRACTION = 0.1  # a plain progress line every 10 % of the run …
PLAIN_EVERY_SECONDS = 30.0  # … or every 30 s, whichever comes first (and at the last step)


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)


def iso_utc(t: datetime) -> str:
    """ISO 8601 UTC with milliseconds: 2025-01-31T12:00:00.123Z."""
    return t.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class StepEvent:
    """One optimizer step (loss is read back only on logging steps; None otherwise)."""

    step: int
    total: int
    epoch: int
    loss: float | None
    lr: float
    it_per_s: float


@dataclass
class Commands:
    """Requests from outside (job runner, UI), checked between steps."""

    stop: bool = False
    save: bool = False


class Callback:
    """Base callback: override what you need."""

    def on_plan(self, lines: list[str]) -> None:
        """The run's plan (folders, steps, schedule, output), before anything is encoded or trained."""

    def on_notice(self, message: str) -> None:
        """Something worth a line in the log (e.g. stale temporary files removed)."""

    def on_warning(self, message: str) -> None:
        """Something went wrong but the run goes on (e.g. a callback failed)."""

    def on_cache(self, kind: str, done: int, total: int) -> None:
        """Progress of encoding `kind` ("latents", "captions") into the cache before training."""

    def on_start(self, total_steps: int, info: dict[str, object]) -> None: ...

    def on_step(self, event: StepEvent) -> None: ...

    def on_validation(self, step: int, loss: float) -> None: ...

    def on_save(self, step: int, path: Path) -> None: ...

    def on_error(self, message: str) -> None:
        """The run is ending with an error (the exception propagates after this)."""

    def on_end(self, steps: int, stopped: bool) -> None: ...


@dataclass
class CallbackList(Callback):
    """Fan an event out to several callbacks; one that raises is reported once (as a warning) and the run goes on.
    A `DiskFullError` is not swallowed."""

    callbacks: list[Callback] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one line per failed callback

    def _each(self, method: str, *args: object) -> None:
        for c in self.callbacks:
            try:
                getattr(c, method)(*args)
            except DiskFullError:
                raise
            except Exception as exc:  # noqa: BLE001 — whatever a callback does wrong, training goes on
                self._failed(c, method, exc)

    def _failed(self, c: Callback, method: str, exc: Exception) -> None:
        name = type(c).__name__
        if any(f.startswith(f"{name}.") for f in self.failures):
            return  # reported once
        message = f"{name}.{method} failed ({type(exc).__name__}: {exc}); training goes on"
        self.failures.append(message)
        for other in self.callbacks:
            if other is not c:
                try:
                    other.on_warning(message)
                except Exception:  # noqa: BLE001 — a warning must not raise in turn
                    pass

    def on_plan(self, lines: list[str]) -> None:
        self._each("on_plan", lines)

    def on_notice(self, message: str) -> None:
        self._each("on_notice", message)

    def on_warning(self, message: str) -> None:
        self._each("on_warning", message)

    def on_cache(self, kind: str, done: int, total: int) -> None:
        self._each("on_cache", kind, done, total)

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        self._each("on_start", total_steps, info)

    def on_step(self, event: StepEvent) -> None:
        self._each("on_step", event)

    def on_validation(self, step: int, loss: float) -> None:
        self._each("on_validation", step, loss)

    def on_save(self, step: int, path: Path) -> None:
        self._each("on_save", step, path)

    def on_error(self, message: str) -> None:
        for c in self.callbacks:  # the run is failing already: nothing here may hide the real error
            try:
                c.on_error(message)
            except Exception:  # noqa: BLE001
                pass

    def on_end(self, steps: int, stopped: bool) -> None:
        self._each("on_end", steps, stopped)


class Throttle:
    """Says when a progress line is due: every `fraction` of `total`, every `seconds` (by `clock`), and at the end."""

    def __init__(self, total: int, fraction: float = PLAIN_EVERY_FRACTION, seconds: float = PLAIN_EVERY_SECONDS,
                 clock: Clock = time.monotonic) -> None:
        self.total, self.seconds, self.clock = total, seconds, clock
        self.interval = max(1, math.ceil(total * fraction))
        self.next_mark, self.last_time = self.interval, clock()

    def due(self, done: int) -> bool:
        """Whether to report `done` now (and remember that it was reported)."""
        now = self.clock()
        if not (done >= self.next_mark or now - self.last_time >= self.seconds or done >= self.total):
            return False
        self.last_time, self.next_mark = now, (done // self.interval + 1) * self.interval
        return True


def format_eta(seconds: float) -> str:
    """3725 → '1:02:05' (rounded up: 0:00:00 only when done)."""
    s = math.ceil(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def step_line(event: StepEvent, loss: float | None) -> str:
    """One plain progress line: step/total, epoch, loss, lr, it/s and ETA."""
    pct = 100 * event.step // max(1, event.total)
    eta = format_eta((event.total - event.step) / event.it_per_s) if event.it_per_s > 0 else "?"
    loss_text = f"{loss:.4f}" if loss is not None else "-"
    return (f"step {event.step}/{event.total} ({pct}%)  epoch {event.epoch}  loss {loss_text}  lr {event.lr:.2e}  "
            f"{event.it_per_s:.2f} it/s  ETA {eta}")


class ProgressLines:
    """Plain progress lines for logs and pipes: one every 10 % of the steps or 30 s, whichever first."""

    def __init__(self, total: int, clock: Clock = time.monotonic, fraction: float = PLAIN_EVERY_FRACTION,
                 seconds: float = PLAIN_EVERY_SECONDS) -> None:
        self.throttle = Throttle(total, fraction, seconds, clock)
        self.loss: float | None = None

    def line(self, event: StepEvent) -> str | None:
        """The line to print for this step, or None when none is due."""
        if event.loss is not None:
            self.loss = event.loss
        return step_line(event, self.loss) if self.throttle.due(event.step) else None


class RichProgress(Callback):
    """A console progress bar with step, loss, lr and it/s; on a console that is not a terminal (a log file, a
    pipe) plain lines instead, every 10 % of the run or 30 s."""

    def __init__(self, console=None, clock: Clock = time.monotonic) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[speed]} it/s"),
            TimeRemainingColumn(),
            console=console,
        )
        self.console = self.progress.console
        self.plain = not self.console.is_terminal
        self.clock = clock
        self.lines: ProgressLines | None = None
        self.cache_throttles: dict[str, Throttle] = {}
        self.task = None
        self.last_loss = "-"
        self.cache_tasks: dict[str, object] = {}

    def _print(self, text: str, style: str | None = None) -> None:
        self.console.print(text, style=style, markup=False, highlight=False)

    def on_plan(self, lines: list[str]) -> None:
        for line in lines:
            self._print(line)

    def on_notice(self, message: str) -> None:
        self._print(message)

    def on_warning(self, message: str) -> None:
        self._print(f"warning: {message}", style="yellow")

    def on_cache(self, kind: str, done: int, total: int) -> None:
        if self.plain:
            throttle = self.cache_throttles.setdefault(kind, Throttle(total, clock=self.clock))
            if done == 0 or throttle.due(done):
                self._print(f"cache {kind} {done}/{total}")
            return
        if kind not in self.cache_tasks:
            self.progress.start()
            self.cache_tasks[kind] = self.progress.add_task(kind, total=total, loss="", lr="", speed="")
        self.progress.update(self.cache_tasks[kind], completed=done, description=f"cache {kind}")

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        if self.plain:
            self.lines = ProgressLines(total_steps, self.clock)
            self._print(f"training {total_steps} steps")
            return
        for task in self.cache_tasks.values():
            self.progress.update(task, visible=False)
        self.progress.start()
        done = info.get("resumed_from")
        self.task = self.progress.add_task("train", total=total_steps, completed=done if isinstance(done, int) else 0,
                                           loss="-", lr="-", speed="-")

    def on_step(self, event: StepEvent) -> None:
        if self.plain:
            line = self.lines.line(event) if self.lines else None
            if line:
                self._print(line)
            return
        if event.loss is not None:
            self.last_loss = f"{event.loss:.4f}"
        self.progress.update(
            self.task, completed=event.step, loss=self.last_loss, lr=f"{event.lr:.2e}", speed=f"{event.it_per_s:.2f}"
        )

    def on_validation(self, step: int, loss: float) -> None:
        self._print(f"step {step}  val_loss {loss:.4f}")

    def on_save(self, step: int, path: Path) -> None:
        self._print(f"saved {path}")

    def on_error(self, message: str) -> None:
        if not self.plain:
            self.progress.stop()

    def on_end(self, steps: int, stopped: bool) -> None:
        if not self.plain:
            self.progress.stop()


class _AppendFile:
    """A text file written line by line straight to disk; a line the disk has no room for is taken back whole
    (the file keeps only complete lines) and raised as a `DiskFullError` naming the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFullError(path, None, None, "creating") from exc
            raise
        self.size = os.fstat(self.fd).st_size

    def write(self, text: str) -> None:
        """Append `text` (complete lines) or nothing."""
        data = text.encode("utf-8")
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            os.ftruncate(self.fd, self.size)  # no half line
            if is_disk_full(exc):
                raise DiskFullError(self.path, len(data), None, "appending to") from exc
            raise
        self.size += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class OnStart(Callback):
    """Runs `action` when training starts (a resumed run's config snapshot: only once the resume is accepted)."""

    def __init__(self, action: Callable[[], None]) -> None:
        self.action = action

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        self.action()


class CsvLog(Callback):
    """`step,epoch,loss,lr,val_loss,time` rows (val_loss rows from validation; time in ISO 8601 UTC), each on
    disk as soon as it is logged."""

    COLUMNS = ["step", "epoch", "loss", "lr", "val_loss", "time"]

    def __init__(self, path: Path, now: Now = utc_now) -> None:
        self.path, self.now = path, now
        self.file: _AppendFile | None = None

    def _row(self, row: list[object]) -> None:
        buf = io.StringIO()
        csv.writer(buf).writerow(row)
        if self.file:
            self.file.write(buf.getvalue())

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        resumed = info.get("resumed_from", -1)  # a step: keep the rows up to it; None: keep them all
        if resumed != -1 and self.path.exists():
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f))
            buf = io.StringIO()
            csv.writer(buf).writerows([self.COLUMNS] + [r for r in rows[1:]
                                                        if r and (resumed is None or _row_step(r) <= resumed)])
            write_text_atomic(self.path, buf.getvalue())
            self.file = _AppendFile(self.path)
            return
        if self.path.exists():
            self.path.unlink()  # a fresh log per run folder
        self.file = _AppendFile(self.path)
        self._row(self.COLUMNS)

    def on_step(self, event: StepEvent) -> None:
        if event.loss is not None:
            self._row([event.step, event.epoch, f"{event.loss:.6f}", f"{event.lr:.6g}", "", iso_utc(self.now())])

    def on_validation(self, step: int, loss: float) -> None:
        self._row([step, "", "", "", f"{loss:.6f}", iso_utc(self.now())])

    def on_end(self, steps: int, stopped: bool) -> None:
        if self.file:
            self.file.close()


def _row_step(row: list[str]) -> int:
    try:
        return int(row[0])
    except (ValueError, IndexError):
        return -1


class RunLog(Callback):
    """`train/run.log`: the plan, notices, warnings, plain progress lines, validation, saves, an error and the end,
    each line stamped with the UTC time. Lines before training starts are held and written when it does (a run
    that fails earlier leaves no run folder)."""

    def __init__(self, path: Path, now: Now = utc_now, clock: Clock = time.monotonic) -> None:
        self.path, self.now, self.clock = path, now, clock
        self.file: _AppendFile | None = None
        self.pending: list[str] = []
        self.lines: ProgressLines | None = None
        self.failed = False

    def _log(self, text: str) -> None:
        stamp = iso_utc(self.now())
        out = "".join(f"{stamp}  {line}\n" for line in text.splitlines() or [""])
        if self.file:
            self.file.write(out)
        else:
            self.pending.append(out)

    def on_plan(self, lines: list[str]) -> None:
        for line in lines:
            self._log(line)

    def on_notice(self, message: str) -> None:
        self._log(message)

    def on_warning(self, message: str) -> None:
        self._log(f"warning: {message}")

    def on_cache(self, kind: str, done: int, total: int) -> None:
        if done == total:
            self._log(f"cache {kind} {done}/{total}")

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        self.file = _AppendFile(self.path)
        pending, self.pending = "".join(self.pending), []
        if pending:
            self.file.write(pending)
        self.lines = ProgressLines(total_steps, self.clock)
        self._log(f"training {total_steps} steps")

    def on_step(self, event: StepEvent) -> None:
        line = self.lines.line(event) if self.lines else None
        if line:
            self._log(line)

    def on_validation(self, step: int, loss: float) -> None:
        self._log(f"step {step}  val_loss {loss:.6f}")

    def on_save(self, step: int, path: Path) -> None:
        self._log(f"saved {path}")

    def on_error(self, message: str) -> None:
        self.failed = True  # the error line is the end (and on a full disk even it may not fit)
        self._log(f"error: {message}")

    def on_end(self, steps: int, stopped: bool) -> None:
        try:
            if self.file and not self.failed:
                self._log(f"{'stopped' if stopped else 'ended'} after {steps} steps")
        finally:
            if self.file:
                self.file.close()


class JsonLinesEvents(Callback):
    """Progress as JSON lines, each on disk when it happens, for a program that watches a run from outside (the job
    queue, the web UI): {"event": "start" | "step" | "validation" | "save" | "notice" | "warning" | "error" | "end",
    "time": ISO 8601 UTC, …}. Every step is written (the loss only where the run read it back), so a reader can show
    live progress without parsing the console text."""

    def __init__(self, path: Path, now: Now = utc_now) -> None:
        self.file, self.now = _AppendFile(path), now

    def _write(self, event: str, **values: object) -> None:
        stamp = self.now().isoformat(timespec="seconds")
        self.file.write(json.dumps({"event": event, "time": stamp, **values}, default=str) + "\n")

    def on_notice(self, message: str) -> None:
        self._write("notice", message=message)

    def on_warning(self, message: str) -> None:
        self._write("warning", message=message)

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        self._write("start", total=total_steps, **{k: v for k, v in info.items() if k not in ("event", "time")})

    def on_step(self, event: StepEvent) -> None:
        self._write("step", step=event.step, total=event.total, epoch=event.epoch, loss=event.loss, lr=event.lr,
                    it_per_s=event.it_per_s)

    def on_validation(self, step: int, loss: float) -> None:
        self._write("validation", step=step, loss=loss)

    def on_save(self, step: int, path: Path) -> None:
        self._write("save", step=step, path=str(path))

    def on_error(self, message: str) -> None:
        self._write("error", message=message)

    def on_end(self, steps: int, stopped: bool) -> None:
        self._write("end", steps=steps, stopped=stopped)
        self.file.close()
