"""Progress leaves the engine as events to callbacks; requests come in as commands. The engine never prints."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


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

    def on_cache(self, kind: str, done: int, total: int) -> None:
        """Progress of encoding `kind` ("latents", "captions") into the cache before training."""

    def on_start(self, total_steps: int, info: dict[str, object]) -> None: ...

    def on_step(self, event: StepEvent) -> None: ...

    def on_validation(self, step: int, loss: float) -> None: ...

    def on_save(self, step: int, path: Path) -> None: ...

    def on_end(self, steps: int, stopped: bool) -> None: ...


@dataclass
class CallbackList(Callback):
    """Fan an event out to several callbacks."""

    callbacks: list[Callback] = field(default_factory=list)

    def on_plan(self, lines: list[str]) -> None:
        for c in self.callbacks:
            c.on_plan(lines)

    def on_cache(self, kind: str, done: int, total: int) -> None:
        for c in self.callbacks:
            c.on_cache(kind, done, total)

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        for c in self.callbacks:
            c.on_start(total_steps, info)

    def on_step(self, event: StepEvent) -> None:
        for c in self.callbacks:
            c.on_step(event)

    def on_validation(self, step: int, loss: float) -> None:
        for c in self.callbacks:
            c.on_validation(step, loss)

    def on_save(self, step: int, path: Path) -> None:
        for c in self.callbacks:
            c.on_save(step, path)

    def on_end(self, steps: int, stopped: bool) -> None:
        for c in self.callbacks:
            c.on_end(steps, stopped)


class RichProgress(Callback):
    """A console progress bar with step, loss, lr and it/s."""

    def __init__(self, console=None) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[speed]} it/s"),
            TimeRemainingColumn(),
            console=console,
        )
        self.task = None
        self.last_loss = "-"
        self.cache_tasks: dict[str, object] = {}

    def on_plan(self, lines: list[str]) -> None:
        for line in lines:
            self.progress.console.print(line, highlight=False)

    def on_cache(self, kind: str, done: int, total: int) -> None:
        if kind not in self.cache_tasks:
            self.progress.start()
            self.cache_tasks[kind] = self.progress.add_task(kind, total=total, loss="", lr="", speed="")
        self.progress.update(self.cache_tasks[kind], completed=done, description=f"cache {kind}")

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        for task in self.cache_tasks.values():
            self.progress.update(task, visible=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=total_steps, loss="-", lr="-", speed="-")

    def on_step(self, event: StepEvent) -> None:
        if event.loss is not None:
            self.last_loss = f"{event.loss:.4f}"
        self.progress.update(
            self.task, completed=event.step, loss=self.last_loss, lr=f"{event.lr:.2e}", speed=f"{event.it_per_s:.2f}"
        )

    def on_save(self, step: int, path: Path) -> None:
        self.progress.console.print(f"saved {path}")

    def on_end(self, steps: int, stopped: bool) -> None:
        self.progress.stop()


class CsvLog(Callback):
    """`step,epoch,loss,lr` rows (and `val_loss` rows from validation) in a CSV file, flushed per row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: TextIO | None = None

    def on_start(self, total_steps: int, info: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        self.writer.writerow(["step", "epoch", "loss", "lr", "val_loss"])

    def on_step(self, event: StepEvent) -> None:
        if event.loss is not None:
            self.writer.writerow([event.step, event.epoch, f"{event.loss:.6f}", f"{event.lr:.6g}", ""])
            self.file.flush()

    def on_validation(self, step: int, loss: float) -> None:
        self.writer.writerow([step, "", "", "", f"{loss:.6f}"])
        self.file.flush()

    def on_end(self, steps: int, stopped: bool) -> None:
        if self.file:
            self.file.close()
