"""Options every command that resolves a config shares (`train`, `plan`, `config show`, `config validate`).

Use them as parameter types and hand the values to `resolve_options`:

    @app.command()
    def train(config: ConfigFiles = [], add: AddFiles = [], preset: PresetName = None, set_: SetValues = []):
        resolved = resolve_options(config, add, preset, set_, check_paths=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional, Sequence

import typer
from rich.console import Console
from rich.markup import escape

from ..config.loader import ResolvedConfig, resolve_layers

ConfigFiles = Annotated[
    list[Path], typer.Option("--config", "-c", help="Config TOML file (repeatable; later files win).")
]
AddFiles = Annotated[
    list[str],
    typer.Option("--add", help="Extra TOML layer or preset name (repeatable); its name is appended to output_name."),
]
PresetName = Annotated[
    Optional[str], typer.Option("--preset", help="Shipped preset (see `lorakit config presets`) or TOML below it all.")
]
SetValues = Annotated[
    list[str], typer.Option("--set", help="Override one value, e.g. --set train.learning_rate=1e-4 (repeatable).")
]
OomLayer = Annotated[bool, typer.Option("--oom", help="Apply the out-of-memory fallback layer (as a retry does).")]

err_console = Console(stderr=True, highlight=False)


def resolve_options(
    config: Sequence[Path] = (),
    add: Sequence[str] = (),
    preset: str | None = None,
    set_: Sequence[str] = (),
    oom: bool = False,
    check_paths: bool = False,
    machine: str = "error",
) -> ResolvedConfig:
    """Resolve the layers the shared options name; prints migration notes and warnings to stderr."""
    resolved = resolve_layers(preset, list(config), list(add), oom, list(set_), check_paths=check_paths,
                              machine=machine)
    print_notes(resolved)
    return resolved


def print_notes(resolved: ResolvedConfig) -> None:
    """Migration notes and semantic warnings, on stderr."""
    for note in resolved.notes:
        err_console.print(f"[cyan]note:[/] {escape(note)}")
    for warning in resolved.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}")
