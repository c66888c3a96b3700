"""Loss masks (train.masked_loss) on the data side: where a mask comes from and that it stays on its image.

What sd-scripts does, read in library/train_util.py: with alpha_mask, load_image converts to RGBA and
BaseDataset.__getitem__ takes channel 3 / 255 (an image without alpha becomes 255: all ones); with a dataset's
conditioning_data_dir, ControlNetDataset.__init__ takes glob_images(conditioning_data_dir, <image name without
extension>)[0] (its extensions, sorted) and asserts that no image lacks one.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.config.loader import load_config
from lorakit.config.schema import LorakitConfig
from lorakit.config.validate import check
from lorakit.data.cache import mask_key
from lorakit.data.example import Example, MaskSource
from lorakit.data.pipeline import build_dataset
from lorakit.data.transforms import Augment, example_image, example_mask, mask_values
from lorakit.errors import DataError


def data(folder: Path, *extra: str):
    return load_config(sets=[f'data.train_data_dir="{folder}"', "data.resolution=64", "train.masked_loss=true",
                             *extra]).data


def noise_image(path: Path, size: tuple[int, int], seed: int = 0, mode: str = "RGB") -> np.ndarray:
    """An image of random pixels (no symmetry: a mirror or a shifted crop is told apart); returns its array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    arr = arr[..., 0] if mode == "L" else arr
    Image.fromarray(arr, mode).save(path)
    return arr


def test_the_alpha_channel_of_an_rgba_png_is_the_mask(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    rgba = noise_image(folder / "a.png", (64, 64), mode="RGBA")
    noise_image(folder / "b.png", (64, 64), seed=1)  # no alpha channel
    ds = build_dataset(data(folder, "data.alpha_mask=true", "data.flip_aug=true"), 1, 0)
    by = {(e.image.name, e.flip): e for e in ds.train}
    assert by[("a.png", False)].mask == MaskSource(folder / "a.png", "alpha")
    # sd-scripts: alpha.astype(np.float32) / 255.0, mirrored with the image (torch.flip(alpha_mask, [1]))
    expected = rgba[..., 3].astype(np.float32) / 255.0
    assert np.array_equal(example_mask(by[("a.png", False)]), expected)
    assert np.array_equal(example_mask(by[("a.png", True)]), expected[:, ::-1])
    # an image without alpha: convert("RGBA") makes it opaque, the mask is all ones
    assert np.array_equal(example_mask(by[("b.png", False)]), np.ones((64, 64), np.float32))


def test_mask_image_values_follow_sd_scripts_float_steps() -> None:
    values = np.arange(256, dtype=np.uint8)[None]
    # ControlNetDataset: ToTensor (x / 255) and Normalize(0.5, 0.5); apply_masked_loss: x / 2 + 0.5 (all float32)
    x = values.astype(np.float32) / np.float32(255)
    expected = ((x - np.float32(0.5)) / np.float32(0.5)) / np.float32(2) + np.float32(0.5)
    assert np.array_equal(mask_values(values, "image"), expected)
    assert np.array_equal(mask_values(values, "alpha"), values.astype(np.float32) / np.float32(255))
    assert mask_values(values, "image")[0, 0] == 0 and mask_values(values, "image")[0, -1] == 1


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("random_crop", [False, True])
def test_mask_stays_pixel_aligned_through_resize_crop_and_flip(tmp_path: Path, flip: bool, random_crop: bool) -> None:
    """The mask file is the image's red channel, so the cut mask must equal the cut image's red channel exactly."""
    rgb = noise_image(tmp_path / "img.png", (96, 80))
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "mask.png")
    # resized 72x60 then cut to 64x48: both sides are trimmed (a random crop draws both offsets)
    ex = Example(tmp_path / "img.png", "x", (64, 48), flip=flip, original_size=(80, 96), resized=(72, 60),
                 mask=MaskSource(tmp_path / "mask.png", "image"))
    augment = Augment(random_crop=random_crop)
    seen = set()
    for seed in range(6):
        rng_image, rng_mask = (random.Random(seed), random.Random(seed)) if random_crop else (None, None)
        image = np.asarray(example_image(ex, augment=augment, rng=rng_image))
        mask = example_mask(ex, augment, rng_mask)
        assert mask is not None and mask.shape == (48, 64)
        assert np.array_equal(np.rint(mask * 255).astype(np.uint8), image[..., 0])
        seen.add(mask.tobytes())
    assert len(seen) == (6 if random_crop else 1)  # random offsets really differ between uses
    unflipped = example_mask(Example(ex.image, "x", ex.size, original_size=ex.original_size, resized=ex.resized,
                                     mask=ex.mask))
    assert np.array_equal(example_mask(ex), unflipped[:, ::-1] if flip else unflipped)
    assert not np.array_equal(unflipped, unflipped[:, ::-1])  # an asymmetric mask: a missed mirror would show


def test_mask_follows_the_dataset_examples_cut(tmp_path: Path) -> None:
    """Through build_dataset (kohya buckets, flip_aug): each example's mask equals its image's red channel."""
    folder, masks = tmp_path / "imgs", tmp_path / "masks"
    rgb = noise_image(folder / "img.png", (96, 64))
    masks.mkdir()
    Image.fromarray(rgb[..., 0], "L").save(masks / "img.png")
    ds = build_dataset(data(folder, f'data.conditioning_data_dir="{masks}"', "data.flip_aug=true",
                            "data.bucket_mode='kohya'"), 1, 0)
    assert len(ds.train) == 2
    for ex in ds.train:
        assert ex.mask is not None and ex.mask.path == masks / "img.png" and ex.mask.fingerprint
        image = np.asarray(example_image(ex))
        assert np.array_equal(np.rint(example_mask(ex) * 255).astype(np.uint8), image[..., 0])


def test_conditioning_masks_are_matched_by_name(tmp_path: Path) -> None:
    folder, masks = tmp_path / "imgs", tmp_path / "masks"
    for name in ("a.png", "b.jpg", "c.webp"):
        noise_image(folder / name, (64, 64))
    white, black = np.full((64, 64), 255, np.uint8), np.zeros((64, 64), np.uint8)
    masks.mkdir()
    Image.fromarray(white, "L").save(masks / "a.png")
    Image.fromarray(black, "L").save(masks / "b.PNG")  # glob_images sorts: 'b.PNG' comes before 'b.png'
    Image.fromarray(white, "L").save(masks / "b.png")
    Image.fromarray(black, "L").save(masks / "c.bmp")
    Image.fromarray(black, "L").save(masks / "stray.png")
    ds = build_dataset(data(folder, f'data.conditioning_data_dir="{masks}"'), 1, 0)
    found = {e.image.name: e.mask.path.name for e in ds.train if e.mask}
    assert found == {"a.png": "a.png", "b.jpg": "b.PNG", "c.webp": "c.bmp"}
    by = {e.image.name: e for e in ds.train}
    assert example_mask(by["a.png"]).min() == 1 and example_mask(by["b.jpg"]).max() == 0
    assert any("stray.png" in n for n in ds.scan_notes)  # sd-scripts refuses extra files; lorakit notes them


def test_a_training_image_without_its_mask_is_refused_by_name(tmp_path: Path) -> None:
    folder, masks = tmp_path / "imgs", tmp_path / "masks"
    noise_image(folder / "a.png", (64, 64))
    noise_image(folder / "lonely.png", (64, 64))
    noise_image(masks / "a.png", (64, 64))
    with pytest.raises(DataError, match="lonely.png"):
        build_dataset(data(folder, f'data.conditioning_data_dir="{masks}"'), 1, 0)


def test_masks_in_the_kohya_layout_and_subsets(tmp_path: Path) -> None:
    """A sub-folder's image looks in the same sub-folder of the mask folder first, then in the folder itself."""
    root, masks = tmp_path / "train", tmp_path / "masks"
    noise_image(root / "10_a" / "img.png", (64, 64))
    noise_image(root / "5_b" / "img.png", (64, 64), seed=1)
    noise_image(root / "5_b" / "other.png", (64, 64), seed=2)
    for path in (masks / "10_a" / "img.png", masks / "img.png", masks / "other.png"):
        noise_image(path, (64, 64), seed=3)
    ds = build_dataset(data(root, "data.layout='kohya'", f'data.conditioning_data_dir="{masks}"'), 1, 0)
    found = {e.image.relative_to(root).as_posix(): e.mask.path.relative_to(masks).as_posix() for e in ds.train}
    assert found == {"10_a/img.png": "10_a/img.png", "5_b/img.png": "img.png", "5_b/other.png": "other.png"}
    subsets = load_config(sets=["data.layout='kohya'", "train.masked_loss=true", "data.resolution=64",
                                f'data.conditioning_data_dir="{masks}"',
                                f"data.subsets=[{{image_dir='{root / '5_b'}', num_repeats=2}}]"]).data
    found = {e.image.name: e.mask.path.relative_to(masks).as_posix() for e in build_dataset(subsets, 1, 0).train}
    assert found == {"img.png": "img.png", "other.png": "other.png"}


def test_regularisation_images_without_masks_train_unmasked(tmp_path: Path) -> None:
    folder, reg, masks = tmp_path / "imgs", tmp_path / "reg", tmp_path / "masks"
    noise_image(folder / "a.png", (64, 64))
    noise_image(reg / "r.png", (64, 64))
    noise_image(masks / "a.png", (64, 64))
    noise_image(reg / "a.png", (64, 64))  # named like the training image: it must not take that image's mask
    ds = build_dataset(data(folder, f'data.reg_data_dir="{reg}"', f'data.conditioning_data_dir="{masks}"'), 1, 0)
    assert [e.mask is not None for e in ds.train] == [True] and [e.mask for e in ds.reg] == [None, None]


def test_a_changed_mask_file_changes_the_cache_key(tmp_path: Path) -> None:
    folder, masks = tmp_path / "imgs", tmp_path / "masks"
    noise_image(folder / "a.png", (64, 64))
    noise_image(masks / "a.png", (64, 64))
    cfg = data(folder, f'data.conditioning_data_dir="{masks}"')
    before = mask_key(build_dataset(cfg, 1, 0).train[0], (8, 8))
    assert mask_key(build_dataset(cfg, 1, 0).train[0], (8, 8)) == before
    noise_image(masks / "a.png", (64, 64), seed=5)
    assert mask_key(build_dataset(cfg, 1, 0).train[0], (8, 8)) != before
    alpha = build_dataset(data(folder, "data.alpha_mask=true"), 1, 0).train[0]
    assert mask_key(alpha, (8, 8)) != before and mask_key(alpha, (8, 8)) != mask_key(alpha, (4, 4))


def test_mask_file_of_another_size_is_refused(tmp_path: Path) -> None:
    noise_image(tmp_path / "img.png", (64, 64))
    noise_image(tmp_path / "mask.png", (32, 64))
    ex = Example(tmp_path / "img.png", "x", (64, 64), original_size=(64, 64),
                 mask=MaskSource(tmp_path / "mask.png", "image"))
    with pytest.raises(DataError, match="mask.png is 32x64"):
        example_mask(ex)


def test_masked_loss_and_its_masks_need_each_other(tmp_path: Path) -> None:
    def keys(train: dict, data: dict, error: bool = True) -> list[str]:
        errors, warnings = check(LorakitConfig.model_validate({"train": train, "data": data}))
        return sorted(f.key for f in (errors if error else warnings) if "mask" in f.message)

    masks = tmp_path / "masks"
    masks.mkdir()
    on, folder = {"masked_loss": True}, {"conditioning_data_dir": str(masks)}
    assert keys(on, {}) == ["train.masked_loss"]
    assert keys({}, {"alpha_mask": True}) == ["data.alpha_mask"]
    assert keys({}, folder) == ["data.conditioning_data_dir"]
    assert keys(on, {"conditioning_data_dir": str(tmp_path / "nowhere")}) == ["data.conditioning_data_dir"]
    assert keys(on, {"alpha_mask": True}) == keys(on, folder) == []
    assert keys(on, {"alpha_mask": True, **folder}) == []
    assert keys(on, {"alpha_mask": True, **folder}, error=False) == ["data.alpha_mask"]
