"""The `lorakit` command. Thin: parse arguments, call `lorakit.api`, print. Errors exit without a traceback:
status 2 for bad input (config, data, model, unreadable files), 3 when the disk (or quota) is full; `train` adds
4 (stopped and saved), 5 (out of GPU memory), 6 (NaN/inf steps) and 130 (a second Ctrl+C)."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import EXIT_INPUT, DiskFullError, LorakitError, is_disk_full

app = typer.Typer(
    name="lorakit",
    help="Train LoRA adapters for Stable Diffusion models that ComfyUI, A1111/Forge and diffusers load as they are.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True, soft_wrap=True)  # paths stay whole


def _register() -> None:
    """Each command group lives in its own module and adds itself to `app`."""
    from . import train  # noqa: F401
    from . import config  # noqa: F401
    from . import data  # noqa: F401
    from . import doctor  # noqa: F401
    from . import estimate  # noqa: F401
    from . import bench  # noqa: F401
    from . import pipeline  # noqa: F401
    from . import batch  # noqa: F401
    from . import queue  # noqa: F401
    from . import ui  # noqa: F401
    from . import comfyui  # noqa: F401


def _quiet_libraries() -> None:
    """Library chatter (deprecations, optional backends) is not for lorakit's users."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    # Environment variables rather than the libraries' logging modules: importing those costs seconds at startup.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _quiet_libraries()
    _register()
    try:
        app()
    except LorakitError as exc:  # exit 2 for bad input, 3 for a full disk (DiskFullError)
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(exc.exit_code)
    except (OSError, UnicodeError) as exc:  # a file we could not read or write: the message names it
        if isinstance(exc, OSError) and is_disk_full(exc):
            exc = DiskFullError(exc.filename or "a file", None, None, "writing")
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(getattr(exc, "exit_code", EXIT_INPUT))
