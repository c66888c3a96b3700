"""Comparison grids: size by the layout formula, cells carry the source pixels, labels are drawn."""

import numpy as np
import pytest
from PIL import Image, ImageFont

from lorakit.bench import grid as g
from lorakit.errors import LorakitError


def noise(w, h, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def make():
    images = [[noise(20, 16, 0), noise(20, 16, 1), noise(12, 10, 2)],
              [noise(20, 16, 3), noise(14, 16, 4), noise(20, 8, 5)]]
    return images, g.grid(images, ["w=0", "w=0.5", "w=1.0"], ["seed 1", "seed 22"], "my lora")


def test_size_follows_the_layout_formula():
    images, out = make()
    font = ImageFont.load_default()
    left = max(int(font.getlength(s)) + 1 for s in ["seed 1", "seed 22"]) + 2 * g.PAD
    cell_w, cell_h = 20, 16  # the largest width and height among the images
    assert out.size == (left + 3 * (cell_w + g.PAD) + g.PAD, g.TITLE_H + g.LABEL_H + 2 * (cell_h + g.PAD) + g.PAD)


def test_each_cell_holds_the_source_pixels_centred():
    images, out = make()
    left = g.row_label_width(["seed 1", "seed 22"])
    for r, row in enumerate(images):
        for c, im in enumerate(row):
            x = left + g.PAD + c * (20 + g.PAD) + (20 - im.width) // 2
            y = g.TITLE_H + g.LABEL_H + g.PAD + r * (16 + g.PAD) + (16 - im.height) // 2
            crop = out.crop((x, y, x + im.width, y + im.height))
            assert np.array_equal(np.asarray(crop), np.asarray(im)), (r, c)
    # the margin around the small image in row 0, column 2 stays white
    x = left + g.PAD + 2 * (20 + g.PAD)
    y = g.TITLE_H + g.LABEL_H + g.PAD
    assert (np.asarray(out.crop((x, y, x + 4, y + 3))) == 255).all()


def test_labels_are_drawn():
    _, out = make()
    arr = np.asarray(out)
    title_band = arr[:g.TITLE_H]
    col_band = arr[g.TITLE_H:g.TITLE_H + g.LABEL_H]
    row_band = arr[g.TITLE_H + g.LABEL_H:, :g.row_label_width(["seed 1", "seed 22"])]
    for band in (title_band, col_band, row_band):
        assert (band < 128).any(), "a label band is blank"
    blank = np.asarray(g.grid([[noise(20, 16, 0)]], [""], [], ""))
    assert (blank[:g.TITLE_H + g.LABEL_H] == 255).all()


def test_mismatched_labels_are_refused():
    with pytest.raises(ValueError, match="label"):
        g.grid([[noise(4, 4, 0)]], ["a", "b"], ["r"], "t")


def test_save_png_writes_once_and_never_overwrites(tmp_path):
    _, out = make()
    path = g.save_png(out, tmp_path / "sub" / "grid.png")
    assert np.array_equal(np.asarray(Image.open(path)), np.asarray(out))
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary left behind
    with pytest.raises(LorakitError, match="already exists"):
        g.save_png(out, path)
