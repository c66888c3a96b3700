"""`lorakit batch`: unattended runs of every training folder, from and to remote storage (thin over batch.runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .main import app

console = Console(soft_wrap=True, highlight=False)


class ConsoleReporter:
    """Plain lines, flushed as they come: readable live in a terminal, a log file and a Jupyter cell."""

    def event(self, message: str) -> None:
        console.print(f"[bold cyan]batch[/] {escape(message)}")

    def line(self, text: str) -> None:
        console.print(escape(text))


@app.command()
def batch(
    env: Annotated[Path, typer.Option("--env", help="The env file: [batch] (base_config, working_dir, …), "
                                      "[storage] (the rclone remote) and [output] output_dir; a config layer over "
                                      "base_config.")],
    add: Annotated[list[str], typer.Option("--add", help="Extra TOML layer or preset for every run (repeatable); "
                                           "its stem is appended to each run's name.")] = [],
    reclaim: Annotated[bool, typer.Option("--reclaim", help="First return the remote claims of workers whose lease "
                                          "is older than batch.lease_hours.")] = False,
) -> None:
    """Train every folder of the working folder (downloaded from the remote first), one child run each, retried
    with lighter settings after an out-of-memory; upload the results, clean up what is verified, and print a
    summary (also batch_summary.json). Exit 0 only when every folder succeeded."""
    from ..batch.runner import load_env, run_batch

    result = run_batch(load_env(env, list(add)), ConsoleReporter(), reclaim)
    table = Table(title="batch summary")
    for column in ("folder", "result", "attempts", "run", "note"):
        table.add_column(column)
    for f in result.folders:
        note = f.reason or ("uploaded" if f.uploaded else "") + (", local copy removed" if f.removed else "")
        colour = {"done": "green", "failed": "red"}.get(f.status, "yellow")
        table.add_row(escape(f.name), f"[{colour}]{f.status}[/]", ", ".join(f.attempts), escape(f.run_dir),
                      escape(note.strip(", ")))
    console.print(table)
    if result.stopped:
        console.print(f"[bold red]stopped[/]: {escape(result.stopped)}")
    console.print(f"summary: {escape(str(result.summary_path))}")
    if not result.ok:
        raise typer.Exit(1)
