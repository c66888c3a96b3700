"""sd-scripts' per-use augmentations in real (tiny) runs: data.random_flip with cached latents, data.color_aug
without, and runs with every augmentation off unchanged."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.data.example import Example
from lorakit.data.transforms import Augment, load_pixels
from lorakit.engine.encode import BatchEncoder


def config(tmp_path: Path, image_dir: Path, *extra: str):
    return load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        "train.learning_rate=2e-3", "train.max_train_steps=4", "network.network_dim=2", *extra,
    ])


def asymmetric_images(folder: Path, count: int = 3) -> Path:
    """Images whose left and right halves differ (a mirrored copy is told apart), each with a caption."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"noise {i}", encoding="utf-8")
    return folder


class Recorder:
    """Records what the encoder turns into pixels and what latents each step's examples get (what the UNet sees)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pixels: list[tuple[Example, np.ndarray]] = []
        self.steps: list[tuple[list[Example], torch.Tensor, dict[str, torch.Tensor]]] = []
        self.prefilling = False
        pixels, latents, prefill = BatchEncoder.pixels, BatchEncoder.image_latents, BatchEncoder.prefill

        def record_pixels(enc: BatchEncoder, example: Example) -> np.ndarray:
            out = pixels(enc, example)
            self.pixels.append((example, out))
            return out

        def record_latents(enc: BatchEncoder, examples: list[Example]) -> torch.Tensor:
            out = latents(enc, examples)
            if not self.prefilling:
                self.steps.append((examples, out.clone(), dict(enc.latents)))
            return out

        def record_prefill(enc: BatchEncoder, *args: object, **kwargs: object) -> None:
            self.prefilling = True
            try:
                prefill(enc, *args, **kwargs)  # type: ignore[arg-type]
            finally:
                self.prefilling = False

        monkeypatch.setattr(BatchEncoder, "pixels", record_pixels)
        monkeypatch.setattr(BatchEncoder, "image_latents", record_latents)
        monkeypatch.setattr(BatchEncoder, "prefill", record_prefill)


def test_random_flip_with_cached_latents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sd-scripts caches the mirrored latents beside the plain ones and picks one per use with p = 0.5."""
    images = asymmetric_images(tmp_path / "imgs")
    rec = Recorder(monkeypatch)
    cfg = config(tmp_path, images, "data.random_flip=true", "train.train_batch_size=3",
                 "data.cache_latents_to_disk=false")
    api.train(cfg)
    encoded = {e.key: (e, px) for e, px in rec.pixels}
    assert len(encoded) == 6  # every image and its mirror image, encoded once up front
    for e, px in encoded.values():
        if e.flip:
            plain = encoded[e.mirrored().key][1]
            assert np.array_equal(px, plain[:, :, ::-1])  # the mirror's pixels are the image's, reversed
    uses = [(e, lat) for examples, out, _ in rec.steps for e, lat in zip(examples, out)]
    assert len(uses) == 12 and all(len(examples) == 3 for examples, _, _ in rec.steps)
    for (examples, out, cache) in rec.steps:
        for e, lat in zip(examples, out):
            assert torch.equal(lat, cache[e.key])  # the latents of the use's own (maybe mirrored) pixels
    flipped = sum(e.flip for e, _ in uses)
    assert 2 <= flipped <= 10, flipped  # about half (a binomial(12, 0.5) draw; this seed's is fixed)


def test_random_flip_with_the_disk_cache_skips_the_vae_the_second_time(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    images = asymmetric_images(tmp_path / "imgs", count=2)
    sets = ("data.random_flip=true", f"data.cache_folder='{tmp_path / 'cache'}'", "train.max_train_steps=2")
    first = api.train(config(tmp_path, images, *sets))
    rec = Recorder(monkeypatch)
    second = api.train(config(tmp_path, images, *sets))
    assert rec.pixels == []  # mirrored latents were cached too: nothing is encoded again
    a, b = load_file(first.lora_path), load_file(second.lora_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_color_aug_without_cache_changes_pixels_per_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AugHelper.color_aug (library/train_util.py) runs on every use when latents are not cached; each use here
    gets its own seed from the sampler, so a run repeats its colour changes exactly."""
    images = asymmetric_images(tmp_path / "imgs")
    # in the training process: the recorder sees BatchEncoder.pixels, which prefetch workers do not call
    sets = ("data.color_aug=true", "train.cache_latents=false", "train.train_batch_size=3", "train.dataloader_workers=0")
    runs = []
    for _ in range(2):
        rec = Recorder(monkeypatch)
        runs.append((api.train(config(tmp_path, images, *sets)), rec.pixels))
        monkeypatch.undo()
    (first, seen), (second, again) = runs
    assert len(seen) == 12 and all(e.aug_seed is not None for e, _ in seen)
    assert len({e.aug_seed for e, _ in seen}) == 12
    changed = 0
    for e, px in seen:
        expected = load_pixels(e, augment=Augment(color=True), rng=random.Random(e.aug_seed))
        assert np.array_equal(px, expected)
        changed += not np.array_equal(px, load_pixels(e))
    assert changed >= 1  # p = 0.33 per use
    assert [(e.aug_seed, e.key) for e, _ in seen] == [(e.aug_seed, e.key) for e, _ in again]
    assert all(np.array_equal(p, q) for (_, p), (_, q) in zip(seen, again))
    a, b = load_file(first.lora_path), load_file(second.lora_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_all_off_is_the_run_without_the_fields(tmp_path: Path, image_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    rec = Recorder(monkeypatch)
    absent = api.train(config(tmp_path, image_dir))
    off = api.train(config(tmp_path, image_dir, "data.random_flip=false", "data.color_aug=false",
                           "data.random_crop=false"))
    assert all(e.aug_seed is None and not e.flip for examples, _, _ in rec.steps for e in examples)
    a, b = load_file(absent.lora_path), load_file(off.lora_path)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
