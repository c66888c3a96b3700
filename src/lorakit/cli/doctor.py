"""`lorakit doctor` and `lorakit --version`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .main import app

MARKS = {"ok": "[green]OK  [/]", "warn": "[yellow]WARN[/]", "fail": "[bold red]FAIL[/]"}  # 4 wide, aligned


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"lorakit {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_print_version, is_eager=True,
                                                    help="Print lorakit's version and exit.")] = None,
) -> None:
    """Train LoRA adapters for Stable Diffusion models that ComfyUI, A1111/Forge and diffusers load as they are."""


@app.command()
def doctor(
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Output folder to check (output.output_dir).")]
    = Path("runs"),
) -> None:
    """Check this machine: package versions, GPU and memory, optional tools, output folder and free disk.

    Exit status 1 when a check fails (a run would not start or not finish), 0 otherwise.
    """
    from .. import api

    checks = api.doctor(output_dir)
    console = Console(highlight=False, soft_wrap=True)  # one line per check, also in a log file
    width = max(len(c.name) for c in checks)
    for c in checks:
        console.print(f"{MARKS[c.status]} {escape(c.name.ljust(width))}  {escape(c.detail)}")
        if c.fix:
            console.print(" " * (width + 7) + f"[cyan]→ {escape(c.fix)}[/]")
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        typer.echo(f"{len(failed)} check(s) failed: {', '.join(failed)}", err=True)
        raise typer.Exit(1)
