"""`lorakit queue`: add, list, cancel, stop, move and run jobs (thin over lorakit.jobs)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .main import app
from .options import AddFiles, PresetName, SetValues

console = Console(soft_wrap=True, highlight=False)
queue_app = typer.Typer(help="The job queue: runs queued one after another (one per GPU), surviving the terminal or "
                        "browser that started them.", no_args_is_help=True)
app.add_typer(queue_app, name="queue")
HOME: dict[str, Optional[Path]] = {"home": None}


@queue_app.callback()
def queue_options(home: Annotated[Optional[Path], typer.Option(
        "--home", help="The lorakit home holding the queue (jobs.sqlite) (default: $LORAKIT_HOME, else "
        "~/.lorakit).")] = None) -> None:
    HOME["home"] = home


def _store():
    from ..jobs.store import JobStore

    return JobStore(HOME["home"])


class ConsoleReporter:
    def event(self, message: str) -> None:
        console.print(f"[bold cyan]queue[/] {escape(message)}")

    def line(self, job, text: str) -> None:
        console.print(f"[dim]{job.id}[/] {escape(text)}")


@queue_app.command("add")
def queue_add(config: Annotated[list[Path], typer.Argument(help="Config TOML files (later files win).")] = [],
              preset: PresetName = None, add: AddFiles = [], set_: SetValues = []) -> None:
    """Queue a run: the config is resolved and checked now, and stored as it resolved."""
    from ..jobs.runner import add_job

    job = add_job(_store(), config, preset, add, set_)
    console.print(f"[green]queued[/] job {job.id} ({escape(job.name)}), place "
                  f"{[j.id for j in _store().jobs(('queued',))].index(job.id) + 1}")


@queue_app.command("list")
def queue_list(all_: Annotated[bool, typer.Option("--all", help="Also finished, failed, stopped and cancelled "
                                                  "jobs.")] = False) -> None:
    """The running and queued jobs (in the order they will run)."""
    from ..jobs.store import ACTIVE, STATES

    table = Table()
    for column in ("id", "name", "state", "added", "run folder", "note"):
        table.add_column(column)
    for job in _store().jobs(STATES if all_ else ACTIVE):
        added = datetime.fromtimestamp(job.created).strftime("%Y-%m-%d %H:%M")
        table.add_row(str(job.id), escape(job.name), job.state, added, escape(job.run_dir or ""),
                      escape(job.message or ""))
    console.print(table)


@queue_app.command("cancel")
def queue_cancel(job_id: Annotated[int, typer.Argument(help="The queued job's id.")]) -> None:
    """Take a queued job out of the queue."""
    job = _store().cancel(job_id)
    console.print(f"cancelled job {job.id} ({escape(job.name)})")


@queue_app.command("stop")
def queue_stop(job_id: Annotated[Optional[int], typer.Argument(help="A running job's id (default: every running "
                                                               "job).")] = None) -> None:
    """Stop running jobs: each saves a checkpoint and its LoRA after the current step, then the queue goes on."""
    from ..jobs.runner import stop_running

    stopped = stop_running(_store(), job_id)
    console.print("\n".join(f"stopping job {j.id} ({escape(j.name)})" for j in stopped) or "no job is running")


@queue_app.command("move")
def queue_move(job_id: Annotated[int, typer.Argument(help="The queued job's id.")],
               to: Annotated[int, typer.Option("--to", min=1, help="Its new place (1 = next).")]) -> None:
    """Reorder the queue."""
    order = _store().move(job_id, to)
    console.print("queue: " + ", ".join(f"{j.id} ({escape(j.name)})" for j in order))


@queue_app.command("run")
def queue_run(workers: Annotated[int, typer.Option("--workers", min=1, help="GPUs to use, one job on each "
                                                   "(CUDA_VISIBLE_DEVICES).")] = 1,
              watch: Annotated[bool, typer.Option("--watch", help="Keep waiting for new jobs instead of ending "
                                                  "when the queue is empty.")] = False) -> None:
    """Run the queued jobs in order, each as a `lorakit train` child with its output kept in its run folder. A job
    a killed runner left running is marked failed first. Refused while another runner uses the same GPU."""
    from ..jobs.runner import run_queue

    run_queue(_store(), ConsoleReporter(), workers, watch)
