"""sd-scripts' per-use augmentations: color_aug's hue shift and gamma, random_crop's offsets, and the refusal of
either with cached latents."""

from __future__ import annotations

import colorsys
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.config.data_rules import check_data_options
from lorakit.config.schema import LorakitConfig
from lorakit.data.example import Example
from lorakit.data.settings import DataSection
from lorakit.data.transforms import (Augment, augment_from, bgr_to_hsv, color_aug, crop_offsets, load_pixels,
                                     shift_hue)


def pixel(rgb: tuple[int, int, int], width: int = 1) -> np.ndarray:
    return np.tile(np.asarray(rgb, np.uint8), (1, width, 1))


def opencv_expected(hue_units: int) -> tuple[float, float, float]:
    """The array a fully saturated, full-value OpenCV hue (0..179, 2° each) ends up as when sd-scripts hands
    OpenCV an RGB array as BGR: OpenCV's (b, g, r), in 0..255, written into the RGB array's channels in order."""
    r, g, b = colorsys.hsv_to_rgb(hue_units * 2 / 360, 1.0, 1.0)
    return b * 255, g * 255, r * 255


def test_red_pixel_hue_shift_gives_a_known_colour() -> None:
    """library/train_util.py AugHelper.color_aug: cv2.cvtColor(RGB array, COLOR_BGR2HSV) reads pure red as blue
    (hue 120 of 180), adds the shift (negative: 180 + shift) modulo 180, truncates into uint8 and converts back."""
    red = pixel((255, 0, 0))
    assert bgr_to_hsv(red)[0, 0].tolist() == [120, 255, 255]
    for shift, hue in ((8.0, 128), (-8.0, 112), (3.7, 123), (-0.5, 119)):
        expected = opencv_expected(hue)
        one = shift_hue(red, shift)[0, 0]  # a short row: OpenCV's scalar path rounds (a tie like 25.5 up)
        assert np.abs(one - np.asarray(expected)).max() <= 0.501, shift
        row = shift_hue(pixel((255, 0, 0), 64), shift)[0]  # whole SIMD blocks of 32: truncated
        assert all(np.array_equal(p, row[0]) for p in row)
        assert all(-0.001 < e - c < 1 for e, c in zip(expected, row[0].tolist())), shift
    # +8 units = -16° on the real colours: red turns towards magenta, -8 towards orange
    assert shift_hue(red, 8.0)[0, 0].tolist() == [255, 0, 68]
    assert shift_hue(red, -8.0)[0, 0].tolist() == [255, 68, 0]


def test_shift_keeps_grey() -> None:
    grey = pixel((90, 90, 90), 40)
    assert np.array_equal(shift_hue(grey, 5.5), grey)


def sd_scripts_color_aug(arr: np.ndarray, rng: random.Random) -> np.ndarray:
    """AugHelper.color_aug's draws (library/train_util.py): p 0.33 (random() <= 0.33), then random() > 0.5 → hue
    shift U(-8, 8) (the conversion itself is checked above), else gamma U(0.95, 1.05) applied as `arr ** gamma`
    on the 0..255 values, clipped and truncated to uint8."""
    if rng.random() <= 0.33:
        if rng.random() > 0.5:
            return shift_hue(arr, rng.uniform(-8, 8))
        return np.clip(arr ** rng.uniform(0.95, 1.05), 0, 255).astype(np.uint8)
    return arr


def test_color_aug_draws_and_gamma() -> None:
    img = np.random.default_rng(1).integers(0, 256, (6, 40, 3), dtype=np.uint8)
    changed = 0
    for seed in range(300):
        mine, theirs = color_aug(img, random.Random(seed)), sd_scripts_color_aug(img, random.Random(seed))
        assert np.array_equal(mine, theirs), seed
        changed += not np.array_equal(mine, img)
    assert 70 < changed < 130  # about a third
    rng = random.Random(0)
    while True:  # the first seed state that takes the gamma branch
        state = rng.getstate()
        if rng.random() <= 0.33 and rng.random() <= 0.5:
            gamma = rng.uniform(0.95, 1.05)
            break
    rng.setstate(state)
    white = pixel((255, 255, 255))
    assert color_aug(white, rng)[0, 0].tolist() == [int(min(255.0, 255 ** gamma))] * 3


def test_random_crop_offsets() -> None:
    """trim_and_resize_if_required: centre = excess // 2; random: randint(0, excess), width before height."""
    assert crop_offsets((100, 80), (64, 64)) == (8, 18)
    assert crop_offsets((64, 64), (64, 64), random.Random(0)) == (0, 0)
    seen = set()
    for seed in range(50):
        top, left = crop_offsets((100, 80), (64, 64), random.Random(seed))
        assert 0 <= top <= 16 and 0 <= left <= 36
        ref = random.Random(seed)
        assert (left, top) == (ref.randint(0, 36), ref.randint(0, 16))
        seen.add((top, left))
    assert len(seen) > 30
    one_side = random.Random(3)
    assert crop_offsets((100, 64), (64, 64), one_side)[0] == 0
    ref = random.Random(3)
    ref.randint(0, 36)
    assert one_side.random() == ref.random()  # no draw for a side that needs no trim


def test_random_crop_pixels_and_default_centre(tmp_path: Path) -> None:
    arr = np.zeros((64, 100, 3), np.uint8)
    arr[..., 0] = np.arange(100, dtype=np.uint8)[None, :] * 2  # red encodes the column
    Image.fromarray(arr).save(tmp_path / "a.png")
    ex = Example(image=tmp_path / "a.png", caption="", size=(64, 64))
    centre = load_pixels(ex)
    assert np.allclose(centre, load_pixels(ex, augment=Augment()))
    assert np.isclose((centre[0, 0, 0] + 1) * 127.5, 2 * 18)
    lefts = set()
    for seed in range(20):
        pixels = load_pixels(ex, augment=Augment(random_crop=True), rng=random.Random(seed))
        left = random.Random(seed).randint(0, 36)
        assert np.allclose((pixels[0, 0] + 1) * 127.5, np.arange(left, left + 64) * 2, atol=1e-3)
        lefts.add(left)
    assert len(lefts) > 10
    with pytest.raises(ValueError, match="random generator"):
        load_pixels(ex, augment=Augment(color=True))


def test_augment_settings() -> None:
    assert augment_from(DataSection()) == Augment() and not Augment().active
    assert augment_from(DataSection(color_aug=True, random_crop=True)) == Augment(color=True, random_crop=True)


def test_cached_latents_refuse_per_use_augmentations() -> None:
    """train_network.py: `assert train_dataset_group.is_latent_cacheable()` when cache_latents — "when caching
    latents, either color_aug or random_crop cannot be used"."""
    def errors(cache: bool, **data: object) -> dict[str, str]:
        cfg = LorakitConfig.model_validate({"data": data, "train": {"cache_latents": cache}})
        return {f.key: f.message for f in check_data_options(cfg) if f.error}

    assert errors(True) == {} and errors(False, color_aug=True, random_crop=True) == {}
    found = errors(True, color_aug=True, random_crop=True)
    assert set(found) == {"data.color_aug", "data.random_crop"}
    assert all("train.cache_latents = false" in m for m in found.values())
    assert set(errors(True, random_crop=True)) == {"data.random_crop"}


# -- per-use wiring: the sampler's seeds and flips ----------------------------------------------------------------
def flip_examples(tmp_path: Path) -> list[Example]:
    """Two images as the pipeline makes them: covered, centre-cropped (one wide, its crop 16 px from the left)."""
    wide = Example(image=tmp_path / "w.png", caption="w", size=(64, 64), original_size=(64, 96), crop_top_left=(0, 16),
                   repeats=3)
    kohya = Example(image=tmp_path / "k.png", caption="k", size=(64, 64), original_size=(80, 100), repeats=2,
                    resized=(80, 64), crop_top_left=(0, 8))
    return [wide, kohya]


def test_mirror_moves_the_crop_to_the_other_side(tmp_path: Path) -> None:
    """sd-scripts' __getitem__: a flipped use's crop left is `width - crop right`; lorakit measures its crop in the
    resized image (pipeline.examples_for), so the mirror's left is resized width − left − bucket width."""
    wide, kohya = flip_examples(tmp_path)
    assert wide.mirrored().flip and wide.mirrored().crop_top_left == (0, 96 - 16 - 64)
    # kohya buckets: SDXL's crop conditioning is sd-scripts' get_crop_ltrb (the image fitted inside the 64×64
    # bucket: 64 × 51.2, top (64 - 51.2) // 2 = 6), mirrored left = 64 - (0 + 64) = 0
    assert kohya.mirrored().crop_top_left == (6, 0)
    assert wide.mirrored().mirrored() == wide and wide.mirrored().key != wide.key


def test_sampler_without_augmentation_is_unchanged(tmp_path: Path) -> None:
    from lorakit.data.sampler import BucketBatchSampler

    examples = flip_examples(tmp_path)
    plain = BucketBatchSampler(examples, 2, seed=5)
    off = BucketBatchSampler(examples, 2, seed=5, augment=False, random_flip=False)
    for epoch in (1, 2):
        a, b = list(plain.batches(epoch)), list(off.batches(epoch))
        assert a == b and all(e.aug_seed is None and not e.flip for batch in b for e in batch)
    assert off.mirrored_examples() == []


def test_random_flip_draws_per_use(tmp_path: Path) -> None:
    """sd-scripts flips each use with `random.random() < 0.5` (library/train_util.py BaseDataset.__getitem__);
    lorakit draws it from the epoch's augmentation generator, seeded (seed × 1000003 + epoch) × 31 + 3, after the
    use's augmentation seed (63 random bits) when color_aug / random_crop are on. The order of uses is that of the
    sampler without augmentation."""
    from lorakit.data.sampler import BucketBatchSampler

    examples = flip_examples(tmp_path)
    flips = 0
    for augment in (False, True):
        sampler = BucketBatchSampler(examples, 1, seed=5, augment=augment, random_flip=True)
        plain = BucketBatchSampler(examples, 1, seed=5)
        for epoch in range(1, 200):
            ref = random.Random((5 * 1_000_003 + epoch) * 31 + 3)
            for [use], [base] in zip(sampler.batches(epoch), plain.batches(epoch), strict=True):
                seed = ref.getrandbits(63) if augment else None
                flipped = ref.random() < 0.5
                assert use == (base.mirrored() if flipped else base) and use.aug_seed == seed
                flips += flipped
    assert 0.45 < flips / (2 * 199 * 5) < 0.55
    assert {m.key for m in sampler.mirrored_examples()} == {e.mirrored().key for e in examples}


def test_resume_mid_epoch_repeats_the_draws(tmp_path: Path) -> None:
    """engine/loop.py Batches: a resumed run rebuilds the epoch from its position; seeds and flips come with it."""
    from lorakit.data.sampler import BucketBatchSampler
    from lorakit.engine.loop import Batches, Position

    sampler = BucketBatchSampler(flip_examples(tmp_path), 1, seed=2, augment=True, random_flip=True)
    walk = Batches(sampler, Position())
    whole = [walk.next()[1] for _ in range(12)]
    resumed = Batches(sampler, Position(epoch=2, batch=3))
    tail = [resumed.next()[1] for _ in range(4)]
    assert [[(e.key, e.aug_seed, e.crop_top_left) for e in b] for b in tail] == \
        [[(e.key, e.aug_seed, e.crop_top_left) for e in b] for b in whole[8:]]


def test_the_pipeline_reads_the_augmentation_settings(tmp_path: Path) -> None:
    from conftest import write_images

    from lorakit.data.pipeline import build_dataset

    folder = write_images(tmp_path / "imgs", count=2)
    plain = build_dataset(DataSection(train_data_dir=str(folder), resolution=64), 1, 0)
    flipping = build_dataset(DataSection(train_data_dir=str(folder), resolution=64, random_flip=True), 1, 0)
    colour = build_dataset(DataSection(train_data_dir=str(folder), resolution=64, color_aug=True), 1, 0)
    assert plain.examples == plain.train and len(flipping.examples) == 4
    assert {e.key for e in flipping.examples} == {e.key for e in plain.train} | {e.mirrored().key for e in plain.train}
    sampler = colour.sampler
    assert sampler.augment and not sampler.random_flip and flipping.sampler.random_flip  # type: ignore[attr-defined]
