"""The bench's index.html as a browser shows it (headless Chromium): every image loads at its file's size, the
grids appear pixel for pixel, the loss curve is drawn, and the metrics table holds metrics.csv's values.

No model is rendered: the bench images are two-colour PNGs written here, left half one colour per weight, right
half one colour per (prompt, seed), so every expected value below follows from those colours alone.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image

from browser import needs_chromium, open_page  # noqa: I001 (tests/ is on sys.path, as for conftest)
from lorakit.bench.plan import BenchPlan
from lorakit.bench.render import Rendered
from lorakit.bench.report import COLUMNS, loss_curve_svg, measure, weight_summary, write_csv, write_grids, write_index

pytestmark = needs_chromium

W, H = 40, 32  # bench image size
WEIGHT_COLOURS = {0.0: (230, 40, 40), 0.5: (40, 200, 60), 1.0: (50, 70, 220)}
SCENE_COLOURS = {(0, 3): (250, 220, 30), (0, 7): (30, 200, 210), (1, 3): (190, 60, 200), (1, 7): (120, 80, 20)}
LOSS_SVG = (320, 100)  # width, height of the curve asked for
# log.csv as the trainer writes it (step, epoch, loss, lr, val_loss, time); a row without a loss is not drawn
LOG = [(step, round(0.5 * 0.9 ** step + 0.01 * (step % 3), 6)) for step in range(1, 13)]


def bench_image(prompt: int, seed: int, weight: float) -> Image.Image:
    arr = np.empty((H, W, 3), dtype=np.uint8)
    arr[:, : W // 2] = WEIGHT_COLOURS[weight]
    arr[:, W // 2:] = SCENE_COLOURS[(prompt, seed)]
    return Image.fromarray(arr)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench")
    plan = BenchPlan(prompts=["a red fox", "a blue bird"], seeds=[3, 7], weights=list(WEIGHT_COLOURS),
                     lora="runs/x/my_lora.safetensors", model="tiny-sd")
    (out / "images").mkdir()
    rendered = []
    for p, s, w in plan.images():
        path = out / "images" / f"p{p:02d}_s{s}_w{w:g}.png"
        bench_image(p, s, w).save(path)
        rendered.append(Rendered(p, s, w, path))
    log = out / "log.csv"
    with open(log, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "epoch", "loss", "lr", "val_loss", "time"])
        for step, loss in LOG[:6]:
            writer.writerow([step, 0, loss, 1e-4, "", "2026-12-02T00:00:00"])
        writer.writerow([6, 0, "", 1e-4, 0.2, "2026-12-02T00:00:00"])  # a validation-only row: no loss point
        for step, loss in LOG[6:]:
            writer.writerow([step, 1, loss, 1e-4, "", "2026-12-02T00:00:00"])
    grids = write_grids(plan, rendered, out)
    rows = measure(rendered)
    write_csv(rows, out / "metrics.csv")
    write_index(plan, grids, rows, weight_summary(rows), loss_curve_svg(log, *LOSS_SVG), out / "index.html")
    return {"dir": out, "grids": grids, "rendered": rendered}


@pytest.fixture(scope="module")
def page(report: dict):
    with open_page(report["dir"] / "index.html") as page:
        yield page


def test_every_image_loads_at_its_files_size(page, report):
    images = page.eval_on_selector_all(
        "img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth, e.naturalHeight,"
               " e.clientWidth, e.clientHeight])")
    assert sorted(src for src, *_ in images) == sorted(g.name for g in report["grids"])
    for src, complete, nat_w, nat_h, css_w, css_h in images:
        with Image.open(report["dir"] / src) as png:
            assert complete and (nat_w, nat_h) == png.size, src
        assert (css_w, css_h) == png.size, f"{src} is scaled on the page; its pixels could not be compared"


def test_grids_on_the_page_are_the_grid_pngs_pixel_for_pixel(page, report):
    for grid_png in report["grids"]:
        shot = report["dir"] / f"shot_{grid_png.stem}.png"
        page.locator(f'img[src="{grid_png.name}"]').screenshot(path=str(shot), scale="css", animations="disabled")
        with Image.open(shot) as shown, Image.open(grid_png) as expected:
            shown_px, expected_px = np.asarray(shown.convert("RGB")), np.asarray(expected.convert("RGB"))
        # The layout puts the image at a fractional y (headings sized in em), so the element screenshot takes the
        # whole pixel rows it touches: one row more. Chromium draws the image snapped to whole pixels, unscaled,
        # so the PNG must appear exactly, at one of those row offsets.
        h, w = expected_px.shape[:2]
        assert shown_px.shape[1] == w and h <= shown_px.shape[0] <= h + 1, (grid_png.name, shown_px.shape)
        offsets = range(shown_px.shape[0] - h + 1)
        assert any(np.array_equal(shown_px[dy:dy + h], expected_px) for dy in offsets), grid_png.name


def test_loss_curve_has_one_point_per_logged_loss(page):
    line = page.locator("svg.loss polyline")
    assert line.is_visible()
    points = line.evaluate("l => Array.from(l.points, p => [p.x, p.y])")
    assert len(points) == len(LOG)  # the validation-only row has no loss, so no point
    # the curve spans the box: first step at x=0, last at the width; lowest loss at the bottom, highest at the top
    width, height = LOSS_SVG
    steps, losses = [s for s, _ in LOG], [v for _, v in LOG]
    lo, hi = min(losses), max(losses)
    for (x, y), step, loss in zip(points, steps, losses):
        assert x == pytest.approx((step - steps[0]) / (steps[-1] - steps[0]) * width, abs=0.06)
        assert y == pytest.approx(height - (loss - lo) / (hi - lo) * height, abs=0.06)
    box = line.bounding_box()
    assert box and box["width"] > 0.9 * width and box["height"] > 0.9 * height
    # and it is drawn: the curve's screenshot holds the stroke's red (#c33, anti-aliased on white)
    arr = np.asarray(Image.open(io.BytesIO(page.locator("svg.loss").screenshot())).convert("RGB"))
    reddish = (arr[..., 0] > 150) & (arr[..., 1] < 120) & (arr[..., 2] < 120)
    assert reddish.sum() > width  # a line crossing the whole width


def test_metrics_table_has_one_row_per_image_with_the_csv_values(page, report):
    table = page.eval_on_selector_all("table tr", "trs => trs.map(tr => Array.from(tr.cells, c => c.textContent))")
    with open(report["dir"] / "metrics.csv", newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    assert table[0] == COLUMNS
    assert len(table) - 1 == len(csv_rows) == len(report["rendered"])
    for cells, row in zip(table[1:], csv_rows):
        shown = dict(zip(COLUMNS, cells))
        for key in COLUMNS:
            if key in ("prompt", "seed", "file") or row[key] == "":
                assert shown[key] == row[key], key
            else:  # the page shows 4 significant digits of the CSV's 6
                assert float(shown[key]) == pytest.approx(float(row[key]), rel=6e-4, abs=1e-9), key
        assert (report["dir"] / shown["file"]).is_file()
        # by the colours alone: only the left half (the weight's colour) differs from the weight-0 image
        colour, base = np.array(WEIGHT_COLOURS[float(shown["weight"])]), np.array(WEIGHT_COLOURS[0.0])
        assert float(shown["mean_abs_diff"]) == pytest.approx(np.abs(colour - base).mean() / 2, rel=6e-4, abs=1e-9)


def test_full_page_screenshot_shows_every_grid_cell(page, report):
    shot = report["dir"] / "index_full.png"
    page.screenshot(path=str(shot), full_page=True, animations="disabled")
    arr = np.asarray(Image.open(shot).convert("RGB"))
    assert (arr != 255).any(), "the page screenshot is blank"
    for colour in WEIGHT_COLOURS.values():
        expected = 0
        for grid_png in report["grids"]:
            expected += int(np.all(np.asarray(Image.open(grid_png).convert("RGB")) == colour, axis=-1).sum())
        assert expected > 0
        assert int(np.all(arr == colour, axis=-1).sum()) == expected, colour
