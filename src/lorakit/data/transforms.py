"""Turn an `Example` into pixels: open, orient, resize to cover the target size, centre-crop, flip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DataError
from .example import Example


def open_rgb(path: Path) -> Image.Image:
    """Open an image upright (EXIF orientation applied) as RGB; a clear error names the file if it cannot."""
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return im.convert("RGB")
    except Exception as exc:  # PIL raises many types for bad files
        raise DataError(f"cannot read image {path}: {exc}", "remove the file or re-export it as PNG/JPEG") from exc


def resize_and_crop(im: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, tuple[int, int]]:
    """Scale `im` to cover `size` (w, h) and centre-crop; returns the image and the crop's (top, left)."""
    w, h = size
    scale = max(w / im.width, h / im.height)
    new_w, new_h = max(w, round(im.width * scale)), max(h, round(im.height * scale))
    im = im.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - w) // 2, (new_h - h) // 2
    return im.crop((left, top, left + w, top + h)), (top, left)


def load_pixels(example: Example) -> np.ndarray:
    """Pixels of an example as a float32 CHW array in [-1, 1]."""
    im, _ = resize_and_crop(open_rgb(example.image), example.size)
    if example.flip:
        im = ImageOps.mirror(im)
    arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return arr.transpose(2, 0, 1).copy()
