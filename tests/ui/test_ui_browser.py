"""The web UI in headless Chromium: presets, validation, a real (tiny) run started, watched and stopped through the
queue runner, the queue, and the Japanese page."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
from pathlib import Path

import pytest

from browser import needs_chromium, open_page
from conftest import write_images

pytestmark = needs_chromium
TIMEOUT_MS = 60_000  # a CPU shared with other tests: the tiny run's start (imports, model build) takes a while


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The UI app served by uvicorn in a thread; the queue runner it starts is ended afterwards."""
    import uvicorn

    from lorakit.ui.app import create_app

    monkeypatch.chdir(tmp_path)  # the runner (started by the UI) writes runs/ under its working folder
    home = tmp_path / "home"
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(home), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    while thread.is_alive() and not server.started:
        started.wait(0.05)
    assert server.started, "the UI server did not start"
    try:
        yield f"http://127.0.0.1:{port}", home
    finally:
        server.should_exit = True
        thread.join(10)
        stop_runner(home)


def runner_pid(home: Path) -> int | None:
    """The queue runner's pid from its GPU lock file (lorakit.jobs.runner.GpuLock writes it)."""
    for lock in (home / "locks").glob("gpu-*.lock") if (home / "locks").is_dir() else []:
        found = re.search(r"pid (\d+)", lock.read_text())
        if found:
            return int(found.group(1))
    return None


def stop_runner(home: Path) -> None:
    from lorakit.jobs.runner import GpuLock, visible_gpus
    from lorakit.errors import LorakitError

    pid = runner_pid(home)
    if pid is None:
        return
    try:
        with GpuLock(home, visible_gpus()[0]):
            return  # nobody holds the lock: the pid in the file is stale
    except LorakitError:
        pass
    os.killpg(pid, signal.SIGTERM)  # its own session (start_new_session): the train child goes with it
    os.waitpid(pid, 0)  # the UI runs in this process, so the runner is this process's child


def choose(page, elem_id: str, option: str) -> None:
    """Pick an option of a gradio Dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def fill_number(page, elem_id: str, value: object) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Tab")


def test_train_queue_and_languages(ui_server, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from lorakit.ui.i18n import t

    base, home = ui_server
    images = write_images(tmp_path / "images", count=4, size=(64, 64))
    with open_page(base + "/") as page:
        page.set_default_timeout(TIMEOUT_MS)
        expect.set_options(timeout=TIMEOUT_MS)
        expect(page.locator("#train-preset")).to_be_visible()

        # a preset's values land in the form
        choose(page, "train-preset", "sd15-style")
        page.locator("#train-load").click()
        expect(page.locator("#train-status")).to_contain_text("sd15-style")
        page.screenshot(path=str(tmp_path / "train_simple.png"), full_page=True)

        # a bad value is refused before anything starts, naming its key
        fill_number(page, "simple-network-network_dim", 0)
        page.locator("#train-validate").click()
        expect(page.locator("#train-status")).to_contain_text("network.network_dim")

        # a tiny run: started, watched, stopped
        page.locator("#simple-model-pretrained_model_name_or_path textarea, "
                     "#simple-model-pretrained_model_name_or_path input").first.fill("tiny-sd1")
        page.locator("#simple-data-train_data_dir textarea, #simple-data-train_data_dir input").first.fill(
            str(images))
        fill_number(page, "simple-network-network_dim", 4)
        fill_number(page, "simple-network-network_alpha", 4)
        fill_number(page, "simple-data-resolution", 64)
        fill_number(page, "simple-train-max_train_steps", 1000)
        fill_number(page, "simple-train-max_train_epochs", 1000)
        fill_number(page, "simple-train-train_batch_size", 1)
        choose(page, "simple-train-mixed_precision", "no")
        page.locator("#train-start").click()
        expect(page.locator("#train-status")).to_contain_text("Queued job 1")
        expect(page.locator("#train-stop")).to_be_visible()
        progress = page.locator("#train-progress")
        expect(progress).to_contain_text(re.compile(r"Step \d+/1000 · loss \d"), timeout=120_000)
        first = re.search(r"Step (\d+)/", progress.inner_text()).group(1)
        expect(progress).not_to_contain_text(f"Step {first}/")  # the timer keeps it moving
        expect(page.locator("#train-loss canvas, #train-loss svg").first).to_be_visible()  # vega drew the curve
        page.screenshot(path=str(tmp_path / "train_running.png"), full_page=True)
        page.locator("#train-stop").click()
        expect(page.locator("#train-status")).to_contain_text("Stopping job 1")
        expect(progress).to_contain_text("Job 1 (style): stopped", timeout=120_000)
        expect(page.locator("#train-start")).to_be_visible()

        # three more runs queued: Add to queue makes sure a runner runs, so job 2 starts and 3 and 4 wait; the
        # Queue tab reorders the waiting ones
        stop_runner(home)
        name = page.locator("#simple-output-output_name textarea, #simple-output-output_name input").first
        for job_id in (2, 3, 4):  # each job needs its own output name (the queue refuses a clash)
            name.fill(f"style{job_id}")
            page.locator("#train-enqueue").click()
            expect(page.locator("#train-status")).to_contain_text(f"Queued job {job_id}")
        page.get_by_role("tab", name="Queue").click()
        table = page.locator("#queue-table")
        page.locator("#queue-refresh").click()
        expect(table).to_contain_text(re.compile(r"style3[\s\S]*queued[\s\S]*style4"))
        fill_number(page, "queue-job", 4)
        page.locator("#queue-up").click()
        expect(page.locator("#queue-status")).to_contain_text("Moved job 4 up")
        expect(table).to_contain_text(re.compile(r"style4[\s\S]*style3"))
        page.screenshot(path=str(tmp_path / "queue.png"), full_page=True)
        for tab in ("runs", "plot", "data"):  # the other helpers' tabs, each under its own label
            page.get_by_role("tab", name=t(f"{tab}.tab", "en"), exact=True).click()
            page.screenshot(path=str(tmp_path / f"{tab}.png"), full_page=True)
        page.get_by_role("tab", name=t("train.tab", "en"), exact=True).click()
        page.get_by_role("tab", name=t("train.full", "en"), exact=True).click()
        expect(page.locator("#field-model-pretrained_model_name_or_path")).to_be_visible()
        page.screenshot(path=str(tmp_path / "train_full.png"), full_page=True)

        # the Japanese page, linked from the header
        page.locator("#app-header a[hreflang=ja]").click()
        page.wait_for_url(base + "/ja/")
        expect(page.get_by_role("tab", name="学習")).to_be_visible()
        expect(page.locator("#train-preset")).to_contain_text("プリセット")
        page.screenshot(path=str(tmp_path / "train_ja.png"), full_page=True)
    from lorakit.jobs.store import JobStore

    assert [j.id for j in JobStore(home).jobs(("queued",))] == [4, 3]
    assert JobStore(home).get(1).state == "stopped"
