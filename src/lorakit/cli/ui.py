"""`lorakit ui`: the web UI (thin over lorakit.ui.app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .main import app


@app.command("ui")
def ui(host: Annotated[str, typer.Option("--host", help="Address to listen on; anything but a loopback address "
                                         "needs --auth.")] = "127.0.0.1",
       port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 7860,
       auth: Annotated[Optional[str], typer.Option("--auth", help="user:password the browser must give (default: "
                                                   "$LORAKIT_UI_AUTH).")] = None,
       home: Annotated[Optional[Path], typer.Option("--home", help="The lorakit home holding the job queue (default: "
                                                    "$LORAKIT_HOME, else ~/.lorakit).")] = None,
       lang: Annotated[str, typer.Option("--lang", help="The language the printed address opens: en (at /) or ja "
                                         "(at /ja); both are served.")] = "en") -> None:
    """Open the web UI: train from a form, watch progress, manage the queue and look at runs. Runs go through the
    job queue, so closing the browser or the UI does not stop them."""
    from ..ui.app import serve

    serve(host, port, auth, home, lang)
