"""Per-image bench metrics on 8-bit RGB images (numpy arrays H×W×3 uint8, or PIL images), and a short summary.

Everything is pure numpy: no model, no GPU. Pixel values are on the 0–255 scale throughout.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence, Union

import numpy as np
from PIL import Image

ImageLike = Union[np.ndarray, Image.Image]
HIST_BINS = 32
SATURATION_FRACTION = 0.1  # an increase below 10% of the largest one counts as "no longer growing"
BREAK_FACTOR = 2.0  # sharpness or colourfulness more than ×2 or less than ÷2 of weight 0's: the image breaks down
BREAK_SSIM = 0.3  # SSIM vs weight 0 below this: the image no longer resembles the base render


def as_rgb(image: ImageLike) -> np.ndarray:
    """An H×W×3 float64 array on the 0–255 scale (PIL images are converted to RGB first)."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got an array of shape {arr.shape}")
    return arr.astype(np.float64)


def luminance(image: ImageLike) -> np.ndarray:
    """Y = 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601), 0–255, not rounded."""
    rgb = as_rgb(image)
    return rgb @ np.array([0.299, 0.587, 0.114])


def mean_abs_diff(image: ImageLike, base: ImageLike) -> float:
    """Mean absolute pixel difference to `base` (the weight-0 image of the same seed) over all pixels and channels,
    on the 0–255 scale: 0 means identical, 255 means black vs white everywhere."""
    a, b = as_rgb(image), as_rgb(base)
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape[:2]} vs {b.shape[:2]}; render them at the same size")
    return float(np.abs(a - b).mean())


def _filter_valid(x: np.ndarray, kernel_1d: np.ndarray) -> np.ndarray:
    """Separable 2-D filter, output only where the window lies fully inside (MATLAB filter2 'valid')."""
    k = len(kernel_1d)
    rows = sum(w * x[i:x.shape[0] - k + 1 + i, :] for i, w in enumerate(kernel_1d))
    return sum(w * rows[:, i:rows.shape[1] - k + 1 + i] for i, w in enumerate(kernel_1d))


def ssim(image: ImageLike, base: ImageLike) -> float:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004, IEEE TIP 13(4), eq. 13) on luminance:

        SSIM(x, y) = ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2)),
        C1 = (K1 L)², C2 = (K2 L)², K1 = 0.01, K2 = 0.03, L = 255,

    with local statistics under an 11×11 Gaussian window (σ = 1.5, normalised), computed where the window fits
    inside the image, and the mean of that SSIM map returned (the paper's MSSIM). 1.0 = identical."""
    x, y = luminance(image), luminance(base)
    if x.shape != y.shape:
        raise ValueError(f"images differ in size: {x.shape} vs {y.shape}; render them at the same size")
    if min(x.shape) < 11:
        raise ValueError(f"SSIM needs images at least 11×11 pixels, got {x.shape[1]}×{x.shape[0]}")
    t = np.arange(11) - 5
    g = np.exp(-(t ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def sharpness(image: ImageLike) -> float:
    """Variance of the Laplacian ([[0,1,0],[1,-4,1],[0,1,0]]) of the luminance over the valid region (no padding).
    Higher is sharper; blur lowers it, noise and artefacts raise it."""
    y = luminance(image)
    if min(y.shape) < 3:
        raise ValueError(f"sharpness needs images at least 3×3 pixels, got {y.shape[1]}×{y.shape[0]}")
    lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
    return float(lap.var())


def colourfulness(image: ImageLike) -> float:
    """Hasler & Süsstrunk 2003 ("Measuring colourfulness in natural images", SPIE 5007): rg = R − G,
    yb = ½(R + G) − B, M = σ_rgyb + 0.3 μ_rgyb with σ_rgyb = √(σ_rg² + σ_yb²), μ_rgyb = √(μ_rg² + μ_yb²).
    0 for any grey image."""
    rgb = as_rgb(image)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))


def colour_histogram(image: ImageLike) -> np.ndarray:
    """Per-channel 32-bin histograms (bins of 8 values), each normalised to sum 1: shape (3, 32)."""
    rgb = as_rgb(image).astype(np.int64)
    counts = np.stack([np.bincount(rgb[..., c].ravel() // (256 // HIST_BINS), minlength=HIST_BINS)
                       for c in range(3)]).astype(np.float64)
    return counts / counts.sum(axis=1, keepdims=True)


def histogram_distance(image: ImageLike, training_images: Sequence[ImageLike]) -> float:
    """Bhattacharyya (Hellinger) distance d = √(1 − Σ √(p q)) — the form OpenCV's HISTCMP_BHATTACHARYYA uses —
    between the image's colour histogram and the mean histogram of the training images, averaged over R, G, B.
    0 = same colour distribution, 1 = no colour in common."""
    if not training_images:
        raise ValueError("no training images given for the colour histogram distance")
    p = colour_histogram(image)
    q = np.mean([colour_histogram(t) for t in training_images], axis=0)
    bc = np.sqrt(p * q).sum(axis=1)
    return float(np.sqrt(np.clip(1.0 - bc, 0.0, None)).mean())


def summary(rows: Sequence[Mapping[str, float]], break_factor: float = BREAK_FACTOR,
            break_ssim: float = BREAK_SSIM) -> list[str]:
    """Plain sentences naming where the LoRA's effect saturates and where the image breaks down.

    `rows`: one per weight, means over seeds and prompts, with keys `weight`, `mean_abs_diff` and `ssim` (vs the
    weight-0 image), `sharpness`, `colourfulness`; a row with weight 0 is required. Rules, weights ascending:
    - saturation: after the largest increase of `mean_abs_diff` between neighbouring weights, the first step that
      adds less than 10% of that increase; the weight before that step is named.
    - breakdown: the first weight whose sharpness or colourfulness is more than `break_factor` times (or less than
      1/`break_factor` of) weight 0's, or whose SSIM vs weight 0 is below `break_ssim`.
    """
    rows = sorted(rows, key=lambda r: r["weight"])
    base = next((r for r in rows if r["weight"] == 0), None)
    if base is None:
        raise ValueError("summary needs a row with weight 0 (the base model) to compare against; add 0 to the weights")
    weights = [r["weight"] for r in rows]
    steps = [b["mean_abs_diff"] - a["mean_abs_diff"] for a, b in zip(rows, rows[1:])]
    lines = []
    if not steps or max(steps) <= 0:
        lines.append("no effect: the image does not move further from weight 0 as the weight grows")
    else:
        top = steps.index(max(steps))
        flat = next((i for i in range(top + 1, len(steps)) if steps[i] < SATURATION_FRACTION * steps[top]), None)
        lines.append(f"effect saturates at weight {weights[flat]:g}" if flat is not None
                     else f"effect still growing at weight {weights[-1]:g} (no saturation in this sweep)")
    for r in rows:
        if r["weight"] == 0:
            continue
        reasons = [f"{key} {r[key]:.3g} vs {base[key]:.3g} at weight 0" for key in ("sharpness", "colourfulness")
                   if not _within(r[key], base[key], break_factor)]
        if r["ssim"] < break_ssim:
            reasons.append(f"SSIM vs weight 0 {r['ssim']:.2f} < {break_ssim:g}")
        if reasons:
            lines.append(f"image breaks down at weight {r['weight']:g}: " + ", ".join(reasons))
            break
    else:
        lines.append(f"no breakdown up to weight {weights[-1]:g}")
    return lines


def _within(value: float, reference: float, factor: float) -> bool:
    """Whether `value` lies within [reference / factor, reference × factor] (two zeros count as within)."""
    if reference <= 0:
        return value <= 0
    return reference / factor <= value <= reference * factor
