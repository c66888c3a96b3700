"""Bench metrics checked against their published formulas, computed here by hand on tiny arrays."""

import math

import numpy as np
import pytest
from PIL import Image

from lorakit.bench import metrics


def solid(rgb, h=12, w=12):
    return np.full((h, w, 3), rgb, dtype=np.uint8)


def test_mean_abs_diff_on_the_0_255_scale():
    a = solid((10, 20, 30), 2, 2)
    b = solid((13, 20, 22), 2, 2)
    assert metrics.mean_abs_diff(a, b) == pytest.approx((3 + 0 + 8) / 3)
    assert metrics.mean_abs_diff(solid(0), solid(255)) == 255
    assert metrics.mean_abs_diff(Image.fromarray(a), a) == 0


def test_ssim_identical_is_one_and_negative_is_below_zero():
    # skimage.metrics.structural_similarity documents SSIM(x, x) = 1; a negative has covariance −σ², so SSIM < 0
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    assert metrics.ssim(img, img) == pytest.approx(1.0)
    assert metrics.ssim(img, 255 - img) < 0


def test_ssim_of_two_constant_images_by_hand():
    # Wang et al. 2004 eq. 13 with σx = σy = σxy = 0: SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01·255)²
    a, b = 100.0, 150.0
    c1 = (0.01 * 255) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert metrics.ssim(solid(100, 11, 11), solid(150, 11, 11)) == pytest.approx(expected)
    assert metrics.ssim(solid(100, 16, 13), solid(150, 16, 13)) == pytest.approx(expected)


def test_ssim_refuses_images_smaller_than_the_window():
    with pytest.raises(ValueError, match="11×11"):
        metrics.ssim(solid(1, 10, 10), solid(1, 10, 10))


def test_luminance_weights():
    assert metrics.luminance(solid((255, 0, 0), 1, 1))[0, 0] == pytest.approx(0.299 * 255)
    assert metrics.luminance(solid((10, 20, 40), 1, 1))[0, 0] == pytest.approx(0.299 * 10 + 0.587 * 20 + 0.114 * 40)


def test_sharpness_of_a_checkerboard_by_hand():
    # grey checkerboard 0/v: every inner pixel's 4 neighbours are the other colour, so the Laplacian is +4v on dark
    # pixels and −4v on bright ones; a 6×6 board has a 4×4 valid region with 8 of each, mean 0, variance 16 v²
    v = 50
    board = (np.indices((6, 6)).sum(axis=0) % 2 * v).astype(np.uint8)
    img = np.repeat(board[..., None], 3, axis=2)
    assert metrics.sharpness(img) == pytest.approx(16 * v * v)
    assert metrics.sharpness(solid(77)) == 0


def test_colourfulness_of_pure_red_and_grey():
    # Hasler & Süsstrunk 2003: rg = 255, yb = 127.5, both constant → M = 0.3·√(255² + 127.5²)
    assert metrics.colourfulness(solid((255, 0, 0))) == pytest.approx(0.3 * math.hypot(255, 127.5))
    assert metrics.colourfulness(solid(128)) == 0


def test_colourfulness_of_half_red_half_blue():
    # left half (255,0,0): rg=255, yb=127.5; right half (0,0,255): rg=0, yb=−255
    img = np.zeros((2, 2, 3), np.uint8)
    img[:, 0] = (255, 0, 0)
    img[:, 1] = (0, 0, 255)
    rg, yb = np.array([255, 0]), np.array([127.5, -255])
    expected = math.sqrt(rg.var() + yb.var()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    assert metrics.colourfulness(img) == pytest.approx(expected)


def test_histogram_distance_bhattacharyya():
    # Hellinger form √(1 − Σ√(pq)) per channel, averaged (OpenCV HISTCMP_BHATTACHARYYA)
    red, blue = solid((255, 0, 0)), solid((0, 0, 255))
    assert metrics.histogram_distance(red, [red]) == pytest.approx(0)
    # R: p all in bin 31, q in bin 0 → BC 0, d 1; G: identical → 0; B: disjoint → 1; mean 2/3
    assert metrics.histogram_distance(red, [blue]) == pytest.approx(2 / 3)
    # against the mean of {red, blue}: R hist q = ½ bin0 + ½ bin31, p = bin31 → BC = √½; same for B; G → 0
    d = math.sqrt(1 - math.sqrt(0.5))
    assert metrics.histogram_distance(red, [red, blue]) == pytest.approx(2 * d / 3)


def test_colour_histogram_bins_of_eight_values():
    img = np.array([[[0, 7, 8], [255, 248, 247]]], np.uint8)
    h = metrics.colour_histogram(img)
    assert h.shape == (3, 32)
    assert h[0, 0] == h[0, 31] == 0.5
    assert h[1, 0] == h[1, 31] == 0.5
    assert h[2, 1] == h[2, 30] == 0.5


def row(weight, diff, ssim=0.9, sharp=100.0, colour=30.0):
    return {"weight": weight, "mean_abs_diff": diff, "ssim": ssim, "sharpness": sharp, "colourfulness": colour}


def test_summary_saturation_and_breakdown():
    rows = [row(0, 0, 1.0), row(0.4, 10), row(0.6, 30), row(0.8, 31), row(1.0, 40, sharp=250)]
    # increases 10, 20, 1, 9: largest 20 (0.4→0.6); next step adds 1 < 2 → saturates at 0.6
    # weight 1.0: sharpness 250 > 2 × 100 → breakdown
    lines = metrics.summary(rows)
    assert lines[0] == "effect saturates at weight 0.6"
    assert lines[1].startswith("image breaks down at weight 1:") and "sharpness" in lines[1]


def test_summary_no_saturation_no_breakdown_and_ssim_rule():
    rows = [row(1.0, 30), row(0, 0, 1.0), row(0.5, 15)]
    assert metrics.summary(rows) == ["effect still growing at weight 1 (no saturation in this sweep)",
                                     "no breakdown up to weight 1"]
    rows = [row(0, 0, 1.0), row(0.5, 15, ssim=0.2)]
    assert "SSIM" in metrics.summary(rows)[1]
    with pytest.raises(ValueError, match="weight 0"):
        metrics.summary([row(0.5, 1)])


def test_ssim_single_window_by_explicit_weighted_sums():
    # an 11×11 image has one window position: the map is one value, eq. 13 with Gaussian-weighted statistics
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (11, 11), dtype=np.uint8).astype(float)
    y = np.clip(x * 0.5 + rng.integers(0, 60, (11, 11)), 0, 255).round()
    t = np.arange(-5, 6)
    w = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5 ** 2))
    w /= w.sum()
    mx, my = (w * x).sum(), (w * y).sum()
    vx, vy, cxy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum(), (w * (x - mx) * (y - my)).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    grey = lambda a: np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)  # noqa: E731 — grey: Y equals the value
    assert metrics.ssim(grey(x), grey(y)) == pytest.approx(expected)
