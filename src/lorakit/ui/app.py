"""The web UI's frame: one gr.Blocks per language (English at `/`, Japanese at `/ja`) on one FastAPI app, each
with a header linking to the other language, the Train and Queue tabs and the Runs / Plot / Data tabs."""

from __future__ import annotations

import ipaddress
from html import escape
import os
from pathlib import Path
from typing import Callable

import gradio as gr

from ..errors import LorakitError
from ..jobs.store import lorakit_home
from .i18n import LANG_NAMES, LANGS, t
from .data_tab import build_data_tab
from .plot_tab import build_plot_tab
from .queue_tab import build_queue_tab
from .runs_tab import build_runs_tab
from .train_tab import build_train_tab

AUTH_ENV = "LORAKIT_UI_AUTH"


def lang_path(lang: str) -> str:
    return "/" if lang == "en" else f"/{lang}"


def lang_url(lang: str) -> str:
    return "/" if lang == "en" else f"/{lang}/"


def build_blocks(lang: str, home: Path) -> gr.Blocks:
    """The whole UI in one language."""
    with gr.Blocks(title=t("app.title", lang)) as blocks:
        links = " · ".join(f'<a href="{lang_url(other)}" target="_self" hreflang="{other}">{LANG_NAMES[other]}</a>'
                           for other in LANGS if other != lang)
        gr.HTML(f"<h2>{escape(t('app.title', lang))}</h2><p>{escape(t('app.subtitle', lang))} — "
                f"{escape(t('app.language', lang))}: {links}</p>", elem_id="app-header")
        with gr.Tabs():
            build_train_tab(lang, home)
            build_queue_tab(lang, home)
            build_runs_tab(lang, home)
            build_plot_tab(lang, home)
            build_data_tab(lang)
    return blocks


def parse_auth(text: str | None) -> tuple[str, str] | None:
    """"user:password" → (user, password); LorakitError for anything else."""
    if not text:
        return None
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise LorakitError("--auth must be user:password (both non-empty)", f"e.g. --auth me:secret, or set {AUTH_ENV}")
    return user, password


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, auth: tuple[str, str] | None) -> None:
    """Only a loopback address is served without a password: the UI starts training runs and reads files."""
    if not is_loopback(host) and auth is None:
        raise LorakitError(f"--host {host} would let other machines use the UI without a password",
                           f"add --auth user:password (or set {AUTH_ENV}), or keep the default 127.0.0.1")


def _redirect(url: str) -> Callable[[], object]:
    from fastapi.responses import RedirectResponse

    return lambda: RedirectResponse(url)


def create_app(home: Path | None = None, auth: tuple[str, str] | None = None):
    """The FastAPI app serving every language: English at `/`, the others at `/<lang>/`."""
    from fastapi import FastAPI

    home = lorakit_home(home)
    app = FastAPI()
    for lang in LANGS:
        if lang != "en":  # `/ja` without its slash would reach the root app and find nothing
            app.add_api_route(lang_path(lang), _redirect(lang_url(lang)), include_in_schema=False)
    order = [lang for lang in LANGS if lang != "en"] + ["en"]  # `/` last: a mount at the root catches the rest
    for lang in order:
        path = "" if lang == "en" else lang_path(lang)
        gr.mount_gradio_app(app, build_blocks(lang, home), path=path or "/", auth=auth, footer_links=[],
                            allowed_paths=[str(p) for p in run_folders(home)])
    return app


def run_folders(home: Path) -> list[Path]:
    """The folders whose files (LoRAs, samples, bench pages) the Runs tab may serve: ./runs, the lorakit home and
    the output folder of every job in the queue when the UI starts. Nothing else on the machine is served."""
    from ..jobs.store import JobStore

    folders = {Path("runs").resolve(), home.resolve()}
    folders |= {Path(job.run_dir).resolve().parent for job in JobStore(home).jobs() if job.run_dir}
    return sorted(folders)


def serve(host: str = "127.0.0.1", port: int = 7860, auth_text: str | None = None, home: Path | None = None,
          lang: str = "en") -> None:
    """Serve the UI until interrupted (never shared through a public link)."""
    import uvicorn

    if lang not in LANGS:
        raise LorakitError(f"--lang {lang}: not a UI language", f"use one of {', '.join(LANGS)}")
    auth = parse_auth(auth_text or os.environ.get(AUTH_ENV))
    check_host(host, auth)
    app = create_app(home, auth)
    print(f"lorakit UI: http://{host}:{port}{lang_url(lang)}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
