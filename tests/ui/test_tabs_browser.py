"""The Runs, Plot and Dataset tabs in a real browser: a small gr.Blocks with the three tabs, served on 127.0.0.1 and
opened in headless Chromium. Values come from the files written here (a log.csv with known rows, a folder of
write_images images), never from lorakit's own output; every wait is on a page condition."""

from __future__ import annotations

import os
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urljoin

import pytest

from browser import needs_chromium, open_page  # noqa: I001 (tests/ is on sys.path, as for conftest)
from conftest import write_images

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

pytestmark = needs_chromium
TIMEOUT_MS = 20_000
# A CsvLog file (src/lorakit/engine/events.py CsvLog: step,epoch,loss,lr,val_loss,time; validation rows carry only
# step, val_loss and time): the last logged loss is 0.25, four steps logged.
LOG = """step,epoch,loss,lr,val_loss,time
1,1,0.900000,0.0001,,2025-01-01T00:00:01.000Z
2,1,0.700000,0.0001,,2025-01-01T00:00:02.000Z
2,,,,0.800000,2025-01-01T00:00:02.500Z
3,1,0.400000,5e-05,,2025-01-01T00:00:03.000Z
4,1,0.250000,1e-05,,2025-01-01T00:00:04.000Z
"""
BENCH_PAGE = "<html><body>bench of mylora</body></html>"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_run(runs: Path) -> Path:
    run = runs / "20250101_120000"
    (run / "train").mkdir(parents=True)
    (run / "samples").mkdir()
    (run / "config.toml").write_text('[output]\noutput_name = "mylora"\n', encoding="utf-8")
    (run / "train" / "log.csv").write_text(LOG, encoding="utf-8")
    (run / "train" / "mylora.safetensors").write_bytes(b"final")
    (run / "train" / "mylora-step00000002.safetensors").write_bytes(b"step")
    (run / "bench").mkdir()
    (run / "bench" / "index.html").write_text(BENCH_PAGE, encoding="utf-8")
    write_images(run / "samples", count=2)  # stand-ins for step<N>_<i>.png renders
    return run


@contextmanager
def serve(lang: str, home: Path, allowed: Path) -> Iterator[str]:
    import gradio as gr

    from lorakit.ui.data_tab import build_data_tab
    from lorakit.ui.plot_tab import build_plot_tab
    from lorakit.ui.runs_tab import build_runs_tab

    with gr.Blocks() as demo:
        with gr.Tabs():
            build_runs_tab(lang, home)
            build_plot_tab(lang, home)
            build_data_tab(lang)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                allowed_paths=[str(allowed)], ssr_mode=False)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def test_three_tabs_in_english(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the Runs tab's default folder is ./runs
    run = write_run(tmp_path / "runs")
    log_copy = tmp_path / "other.csv"
    log_copy.write_text(LOG, encoding="utf-8")
    data = write_images(tmp_path / "dataset" / "3_thing", count=5)
    with serve("en", tmp_path / "home", tmp_path) as url, open_page(url) as page:
        page.set_default_timeout(TIMEOUT_MS)
        # Runs: the run is listed and chosen on load; its plot, summary and final LoRA link appear.
        status = page.locator("#runs-status")
        status.get_by_text("last loss 0.2500").wait_for()
        assert "4 logged step(s)" in status.inner_text()
        page.locator("#runs-loss-plot canvas, #runs-loss-plot svg").first.wait_for()
        page.locator("#runs-lr-plot canvas, #runs-lr-plot svg").first.wait_for()
        link = page.locator('#runs-lora a[download="mylora.safetensors"]')  # the final save, not -step
        link.wait_for()
        assert page.request.get(link.get_attribute("href")).body() == b"final"
        bench = page.locator("#runs-bench a")
        bench.wait_for()
        assert page.request.get(urljoin(url, bench.get_attribute("href"))).text() == BENCH_PAGE
        page.locator("#runs-samples img").first.wait_for()
        assert "20250101_120000" in page.locator("#runs-run input").input_value()
        page.screenshot(path=str(tmp_path / "runs.png"))

        page.get_by_role("tab", name="Plot").click()
        page.locator("#plot-path textarea, #plot-path input").first.fill(str(log_copy))
        page.locator("#plot-show").click()
        page.locator("#plot-status").get_by_text("5 row(s)").wait_for()  # 5 data rows in LOG
        page.locator("#plot-loss canvas, #plot-loss svg").first.wait_for()
        page.screenshot(path=str(tmp_path / "plot.png"))

        page.get_by_role("tab", name="Dataset").click()
        page.locator("#data-folder textarea, #data-folder input").first.fill(str(data.parent))
        page.locator("#data-inspect").click()
        summary = page.locator("#data-summary")
        summary.get_by_text("5 image(s) in 1 folder(s)").wait_for()
        # 5 images × 3 repeats (the 3_ prefix) at batch size 1: 15 steps per epoch.
        assert "15 step(s) per epoch" in summary.inner_text()
        page.locator("#data-captions").get_by_text("colour block 0").wait_for()
        page.screenshot(path=str(tmp_path / "data.png"))
    assert run.is_dir()
    for name in ("runs.png", "plot.png", "data.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_japanese_tab_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "runs")
    with serve("ja", tmp_path / "home", tmp_path) as url, open_page(url) as page:
        page.set_default_timeout(TIMEOUT_MS)
        page.get_by_role("tab", name="実行結果").wait_for()
        page.get_by_role("tab", name="データセット").wait_for()
        page.locator("#runs-status").get_by_text("最新の損失 0.2500").wait_for()
        page.screenshot(path=str(tmp_path / "runs_ja.png"))
