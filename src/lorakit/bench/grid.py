"""Labelled comparison grids: rows × columns of images (weights across), labels drawn on the PNG itself.

Layout (all white): a title band, a column-label band, then a left row-label band beside the cells. Every cell is
as large as the largest image; smaller images are centred in their cell, never resized, so pixels stay comparable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..errors import LorakitError
from ..io import atomic_path

PAD = 8  # white margin around and between cells, and around labels
TITLE_H = 24  # title band height; the default font is about 11 px tall
LABEL_H = 20  # column-label band height
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)


def row_label_width(row_labels: Sequence[str]) -> int:
    """Width of the left band: the widest row label plus a margin each side (0 when there are no labels)."""
    if not row_labels:
        return 0
    font = ImageFont.load_default()
    return max(int(font.getlength(label)) + 1 for label in row_labels) + 2 * PAD


def grid(images: Sequence[Sequence[Optional[Image.Image]]], col_labels: Sequence[str], row_labels: Sequence[str],
         title: str = "") -> Image.Image:
    """One RGB image: `images[r][c]` at row r, column c (None leaves the cell white), labels above and left.

    Size: width = row-label band + columns × (cell width + PAD) + PAD,
    height = TITLE_H + LABEL_H + rows × (cell height + PAD) + PAD."""
    if not images or not images[0]:
        raise ValueError("grid needs at least one row and one column of images")
    n_cols = len(images[0])
    if any(len(row) != n_cols for row in images):
        raise ValueError(f"every row needs {n_cols} images (one per column); got rows of {[len(r) for r in images]}")
    if len(col_labels) != n_cols or (row_labels and len(row_labels) != len(images)):
        raise ValueError(f"{len(col_labels)} column and {len(row_labels)} row labels for a "
                         f"{len(images)}×{n_cols} grid; give one label per column and per row")
    present = [im for row in images for im in row if im is not None]
    cell_w = max((im.width for im in present), default=1)
    cell_h = max((im.height for im in present), default=1)
    left = row_label_width(row_labels)
    top = TITLE_H + LABEL_H
    width = left + n_cols * (cell_w + PAD) + PAD
    height = top + len(images) * (cell_h + PAD) + PAD
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    _text(draw, font, title, PAD, TITLE_H // 2, centre_x=False)
    for c, label in enumerate(col_labels):
        x = left + PAD + c * (cell_w + PAD)
        _text(draw, font, label, x + cell_w // 2, TITLE_H + LABEL_H // 2, centre_x=True)
    for r, row in enumerate(images):
        y = top + PAD + r * (cell_h + PAD)
        if row_labels:
            _text(draw, font, row_labels[r], PAD, y + cell_h // 2, centre_x=False)
        for c, im in enumerate(row):
            if im is not None:
                x = left + PAD + c * (cell_w + PAD)
                canvas.paste(im.convert("RGB"), (x + (cell_w - im.width) // 2, y + (cell_h - im.height) // 2))
    return canvas


def _text(draw: ImageDraw.ImageDraw, font, text: str, x: int, y_mid: int, centre_x: bool) -> None:
    """Draw `text` vertically centred on `y_mid`, starting at `x` or centred on it (bitmap fonts take no anchor)."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    left = x - (x1 - x0) // 2 if centre_x else x
    draw.text((left - x0, y_mid - (y1 - y0) // 2 - y0), text, fill=BLACK, font=font)


def save_png(image: Image.Image, path: Path) -> Path:
    """Write `image` as PNG atomically (temporary file, then rename); an existing file is never overwritten."""
    path = Path(path)
    if path.exists():
        raise LorakitError(f"{path} already exists; a bench never overwrites its images",
                           "choose another --run-id or delete the old bench folder")
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
