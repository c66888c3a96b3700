"""`lorakit demo`'s pictures: the heat map, the loss plot and the labels carry the values they claim to show."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.demo import (
    EMA_COLOUR, GAP, PAD, PAPER, PLOT_SIZE, RAW_COLOUR, VAL_COLOUR, VISIBLE_CHANGE, before_after_figure,
    change_heat_map, change_verdict, hot_colours, loss_plot, plot_area, read_log, run_demo,
)


def solid(colour: tuple[int, int, int], size: int = 64) -> Image.Image:
    return Image.new("RGB", (size, size), colour)


def panel_rows(figure: Image.Image) -> tuple[int, int]:
    """First and last row of the panel row: text blocks keep a PAD-wide white margin at the left, panels don't."""
    margin = np.asarray(figure)[:, :PAD]
    rows = np.flatnonzero((margin != PAPER).any(axis=(1, 2)))
    return int(rows[0]), int(rows[-1])


def differing_rows(a: Image.Image, b: Image.Image) -> np.ndarray:
    assert a.size == b.size
    return np.flatnonzero((np.asarray(a) != np.asarray(b)).any(axis=(1, 2)))


def test_hot_colours() -> None:
    got = hot_colours(np.array([0.0, 1 / 3, 0.5, 2 / 3, 1.0, 7.0, -1.0]))
    assert got.tolist() == [[0, 0, 0], [255, 0, 0], [255, 128, 0], [255, 255, 0], [255, 255, 255],
                            [255, 255, 255], [0, 0, 0]]


def test_heat_map_of_known_arrays() -> None:
    before = np.zeros((2, 2, 3), np.uint8)
    after = np.zeros((2, 2, 3), np.uint8)
    after[0, 1] = 30  # mean |diff| 30 → half of the maximum → orange
    after[1, 0] = 60  # the maximum → white
    before[1, 1], after[1, 1] = (100, 100, 100), (40, 100, 100)  # |40 - 100| in one channel → mean 20 → red
    heat, peak = change_heat_map(Image.fromarray(before), Image.fromarray(after))
    assert peak == 60
    assert np.asarray(heat).tolist() == [[[0, 0, 0], [255, 128, 0]], [[255, 255, 255], [255, 0, 0]]]
    same, peak = change_heat_map(solid((9, 9, 9)), solid((9, 9, 9)))
    assert peak == 0 and not np.asarray(same).any()


def test_loss_plot_puts_the_curve_where_the_values_are() -> None:
    # steps 1..11, loss 1.0 except a spike of 2.0 at step 6; extra columns (time) and a validation row around
    rows = [{"step": str(s), "epoch": "1", "loss": "2.0" if s == 6 else "1.0", "lr": "0.001", "val_loss": "",
             "time": "12.5"} for s in range(1, 12)]
    rows.insert(3, {"step": "3", "epoch": "", "loss": "", "lr": "", "val_loss": "", "time": ""})
    im = np.asarray(loss_plot(rows))
    left, top, right, bottom = plot_area()
    assert im.shape == (PLOT_SIZE[1], PLOT_SIZE[0], 3)
    x6 = round(left + 5 / 10 * (right - left))
    assert tuple(im[top, x6]) == RAW_COLOUR  # the spike touches the top of the box (the max loss)
    y_ema = round(top + (2.0 - (0.8 * 1.0 + 0.2 * 2.0)) / 1.0 * (bottom - top))  # EMA at step 6: 1.2
    assert tuple(im[y_ema, x6]) == EMA_COLOUR
    assert tuple(im[bottom, left]) == EMA_COLOUR  # step 1, loss 1.0 = the min: bottom-left corner
    y_last = round(top + (2.0 - (1.0 + 0.2 * 0.8 ** 5)) * (bottom - top))  # EMA at step 11, decaying to 1.0
    assert tuple(im[y_last, right]) == EMA_COLOUR
    x3 = round(left + 2 / 10 * (right - left))
    assert tuple(im[top + 5, x3]) == PAPER  # nothing drawn far from the curve
    # the axis labels say the values: another max loss changes the left margin, another last step the bottom
    higher = np.asarray(loss_plot([dict(r, loss="3.0") if r["step"] == "6" and r["loss"] else r for r in rows]))
    ys, xs = np.nonzero((im != higher).any(axis=-1) & (np.arange(im.shape[1]) < left - 1)[None])
    assert ys.size and abs(int(ys.mean()) - top) <= 8
    longer = np.asarray(loss_plot(rows + [{"step": "99", "loss": "1.0"}]))
    ys, _ = np.nonzero((im != longer).any(axis=-1))
    assert ys.max() > bottom + 1


def test_loss_plot_survives_empty_and_validation_only_logs(tmp_path: Path) -> None:
    centre = lambda im: tuple(np.asarray(im)[(plot_area()[1] + plot_area()[3]) // 2,  # noqa: E731
                                             (plot_area()[0] + plot_area()[2]) // 2])
    assert loss_plot([]).size == PLOT_SIZE
    garbage = [{"step": "1", "loss": ""}, {"step": "x", "loss": "1"}, {"loss": "0.5"}, {"step": "2", "loss": "nan"}]
    assert loss_plot(garbage).size == PLOT_SIZE
    assert centre(loss_plot([{"step": "5", "loss": "", "val_loss": "0.3"}])) == VAL_COLOUR
    assert centre(loss_plot([{"step": "5", "loss": "0.3"}])) == EMA_COLOUR  # one point: a dot in the middle
    flat = [{"step": str(s), "loss": "0.5"} for s in range(1, 5)]  # max == min: a level line in the middle
    assert centre(loss_plot(flat)) == EMA_COLOUR
    # read_log reads by column name, whatever the column order, and a missing file is no rows
    path = tmp_path / "log.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerows([["time", "val_loss", "loss", "step"], ["0.1", "", "0.7", "1"], ["0.2", "0.6", "", "1"]])
    assert [(r["step"], r["loss"]) for r in read_log(path)] == [("1", "0.7"), ("1", "")]
    assert read_log(tmp_path / "missing.csv") == []


def test_labels_change_the_label_strips() -> None:
    before, after = solid((10, 200, 10)), solid((10, 190, 10))
    base = before_after_figure(before, after, "lkdemo, a red circle", 1.0, 40, scale=4)
    w = 64 * 4
    assert base.width == 3 * w + 2 * GAP  # before | after | heat map
    first, last = panel_rows(base)
    assert last - first + 1 == w
    assert tuple(np.asarray(base)[first, 0]) == (10, 200, 10)  # the before panel, unchanged
    assert tuple(np.asarray(base)[first, 2 * (w + GAP)]) == (255, 255, 255)  # uniform change: all at the max

    rows = differing_rows(base, before_after_figure(before, after, "lkdemo, a blue square", 1.0, 40, scale=4))
    assert rows.size and rows.max() < first  # the prompt is in the title strip, above the panels
    for other in (before_after_figure(before, after, "lkdemo, a red circle", 0.5, 40, scale=4),
                  before_after_figure(before, after, "lkdemo, a red circle", 1.0, 4, scale=4)):
        diff = np.asarray(base) != np.asarray(other)
        ys, xs = np.nonzero(diff.any(axis=-1))
        assert ys.size and ys.min() > last  # weight and steps are in the caption under the panels ...
        assert xs.min() >= w + GAP and xs.max() < 2 * w + GAP  # ... of the "after" panel


def test_verdict_follows_the_threshold() -> None:
    assert "cannot show the learned concept" in change_verdict(VISIBLE_CHANGE - 0.1)
    assert "heat map shows where the LoRA changed the pixels" in change_verdict(0.0)
    assert "visibly changes" in change_verdict(VISIBLE_CHANGE)
    grey = solid((100, 100, 100))
    invisible = before_after_figure(grey, solid((102, 100, 100)), "p", 1.0, 4)
    visible = before_after_figure(grey, solid((160, 160, 160)), "p", 1.0, 4)
    _, last = panel_rows(invisible)
    rows = differing_rows(invisible.crop((0, last + 1, invisible.width, last + 60)),
                          visible.crop((0, last + 1, visible.width, last + 60)))
    assert rows.size  # captions and verdict differ ...
    assert invisible.height != visible.height  # ... and the invisible case explains itself at more length


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return run_demo(tmp_path_factory.mktemp("demo"), steps=4)


def test_run_demo_writes_labelled_pictures_and_loss_curve(demo) -> None:
    samples = demo.train.run_dir / "samples"
    assert demo.before_after == samples / "before_after.png" and demo.loss_curve == samples / "loss.png"
    assert sorted(p.name for p in samples.iterdir()) == ["before_after.png", "loss.png"]  # no temp files left
    assert Image.open(demo.loss_curve).size == PLOT_SIZE
    assert (np.asarray(Image.open(demo.loss_curve).convert("RGB")) == EMA_COLOUR).all(axis=-1).any()

    figure = Image.open(demo.before_after).convert("RGB")
    w = 64 * 4
    assert figure.width == 3 * w + 2 * GAP  # before | after | heat map, whatever the verdict
    first, last = panel_rows(figure)
    assert last - first + 1 == w
    panels = [figure.crop((i * (w + GAP), first, i * (w + GAP) + w, first + w)) for i in range(3)]
    before, after = (p.resize((64, 64), Image.Resampling.NEAREST) for p in panels[:2])  # undo the 4x enlargement
    diff = np.abs(np.asarray(after, np.float32) - np.asarray(before, np.float32))
    assert float(diff.mean()) == pytest.approx(demo.pixel_change, abs=1e-4)
    assert demo.pixel_change > 0  # 4 steps at lr 1e-3 already move pixels
    heat, _ = change_heat_map(before, after)
    assert np.array_equal(np.asarray(panels[2].resize((64, 64), Image.Resampling.NEAREST)), np.asarray(heat))
