"""Headless Chromium for page tests: Debian's /usr/bin/chromium driven by Playwright for Python.

Never Playwright's own downloaded browsers (`playwright install`): the system package is what `make debian-tools`
installs, and a test that cannot find it skips with the reason instead of fetching anything.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path(os.environ.get("LORAKIT_CHROMIUM", "/usr/bin/chromium"))
# Headless in a container: no sandbox (no user namespaces), no GPU, and nothing that phones home or updates.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def missing_reason() -> str:
    """Why browser tests cannot run here ("" when they can)."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (f"{CHROMIUM} not found: install Debian's chromium package (`make debian-tools`, run by `make test`, "
                "does it as root or with sudo)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: `pip install -c requirements.lock -e '.[test]'`"
    return ""


def chromium_available() -> bool:
    return not missing_reason()


needs_chromium = pytest.mark.skipif(not chromium_available(), reason=missing_reason() or "chromium available")


@contextmanager
def open_page(target: Path | str, width: int = 1280, height: int = 900) -> Iterator["Page"]:
    """A loaded page of `target` (a local file or an http(s) URL) in a fresh headless Chromium with its own
    throw-away profile, at device scale factor 1 so one CSS pixel is one screenshot pixel."""
    from playwright.sync_api import sync_playwright

    url = target if isinstance(target, str) and "://" in target else Path(target).resolve().as_uri()
    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="lorakit-chromium-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": width, "height": height}, device_scale_factor=1)
        try:
            page = context.new_page()
            page.goto(url, wait_until="load")
            yield page
        finally:
            context.close()
