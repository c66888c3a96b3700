"""What `prepare` looks at to judge an image: sharpness, and the perceptual hash plus colour thumbnail that decide
whether two images are the same picture."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .prepare_log import LogRow

COLOUR_SIDE = 2  # the colour thumbnail is COLOUR_SIDE × COLOUR_SIDE RGB, stored as hex in the log
COLOUR_TOLERANCE = 24  # duplicates differ by at most this much in every thumbnail value (0–255)


def grey_thumbnail(im: Image.Image, side: int = 512) -> Image.Image:
    """Greyscale copy with the long side at most `side` (what the sharpness and hash checks look at)."""
    grey = im.convert("L")
    grey.thumbnail((side, side))
    return grey


def laplacian_variance(im: Image.Image) -> float:
    """Sharpness: variance of the 4-neighbour Laplacian of the greyscale image (long side ≤ 512)."""
    grey = im if im.mode == "L" and max(im.size) <= 512 else grey_thumbnail(im)
    a = np.asarray(grey, dtype=np.float32)
    if a.shape[0] < 3 or a.shape[1] < 3:
        return 0.0
    lap = a[1:-1, :-2] + a[1:-1, 2:] + a[:-2, 1:-1] + a[2:, 1:-1] - 4 * a[1:-1, 1:-1]
    return float(lap.var())


def colour_signature(im: Image.Image) -> str:
    """Mean colour of each cell of a COLOUR_SIDE² grid, as hex: the perceptual hash is greyscale only, so this
    keeps a red and a white square (or the same drawing in two colourings) apart."""
    small = im.convert("RGB").resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX)
    return small.tobytes().hex()


def _popcount(values: np.ndarray) -> np.ndarray:
    """Set bits per uint64."""
    if hasattr(np, "bitwise_count"):  # numpy ≥ 2
        return np.bitwise_count(values)
    return np.unpackbits(values.view(np.uint8)).reshape(-1, 64).sum(axis=1)


def _colour(row: LogRow) -> np.ndarray | None:
    try:
        values = np.frombuffer(bytes.fromhex(row.colour), dtype=np.uint8).astype(np.int16)
    except ValueError:
        return None
    return values if values.size == 3 * COLOUR_SIDE ** 2 else None


def dedupe(rows: list[LogRow], distance: int, kept_before: frozenset[str] = frozenset()) -> None:
    """Reject images whose perceptual hash is within `distance` bits of a kept one and whose colour thumbnail is
    within COLOUR_TOLERANCE of it. Images kept by the previous run (`kept_before`) come first, then source order:
    adding a near-duplicate never displaces a kept image. A row without a colour thumbnail matches on the hash."""
    n_values = 3 * COLOUR_SIDE ** 2
    hashes = np.zeros(len(rows), dtype=np.uint64)
    colours = np.zeros((len(rows), n_values), dtype=np.int16)
    coloured = np.zeros(len(rows), dtype=bool)
    names: list[str] = []
    for row in sorted(rows, key=lambda r: r.source not in kept_before):
        if not row.phash or not (row.ok or row.reason.startswith("duplicate")):
            continue
        value, colour, n = np.uint64(int(row.phash, 16)), _colour(row), len(names)
        close = _popcount(hashes[:n] ^ value) <= distance
        if colour is not None:
            close &= ~coloured[:n] | (np.abs(colours[:n] - colour).max(axis=1) <= COLOUR_TOLERANCE)
        twins = np.flatnonzero(close)
        if twins.size:
            row.reject(f"duplicate: same picture as {names[twins[0]]}")
            continue
        row.status, row.ok, row.reason = "ok", 1, ""
        hashes[n] = value
        if colour is not None:
            colours[n], coloured[n] = colour, True
        names.append(row.source)
