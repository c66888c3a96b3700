"""The disk cache: keys, atomic entries, only-missing encoding, a full hit never loads the encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lorakit.data.cache import (
    TensorCache,
    batch_latents,
    fill_latents,
    fill_text,
    latent_key,
    missing_examples,
    text_key,
)
from lorakit.data.pipeline import build_dataset
from lorakit.data.settings import DataSection


def make_images(root: Path, n: int = 4) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = np.full((64, 96 if i % 2 else 64, 3), 20 * i, dtype=np.uint8)
        Image.fromarray(arr).save(root / f"{i}.png")


def plan_examples(root: Path):
    data = DataSection(train_data_dir=str(root), resolution=64, bucket_reso_steps=32, min_bucket_reso=32,
                       flip_aug=True)
    return build_dataset(data, 2, 0).train


class CountingEncoder:
    """Stands in for a VAE: mean colour per 8×8 cell, with a load counter."""

    def __init__(self) -> None:
        self.loads = 0
        self.encoded = 0

    def load(self):
        self.loads += 1

        def encode(pixels: torch.Tensor) -> torch.Tensor:
            self.encoded += pixels.shape[0]
            return torch.nn.functional.avg_pool2d(pixels, 8).repeat(1, 2, 1, 1)[:, :4]

        return encode


def test_put_get_roundtrip_and_missing(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path, "latents")
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    assert cache.get("ab12") is None and cache.missing(["ab12", "cd34", "ab12"]) == ["ab12", "cd34"]
    cache.put("ab12", t)
    assert torch.equal(cache.get("ab12"), t)
    cache.put("cd34", {"hidden": t, "pooled": t[0]})
    got = cache.get("cd34")
    assert set(got) == {"hidden", "pooled"} and torch.equal(got["pooled"], t[0])
    assert cache.missing(["ab12", "cd34"]) == []
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_damaged_entry_is_a_miss(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path)
    cache.put("ee00", torch.zeros(2))
    cache.path("ee00").write_bytes(b"garbage")
    assert cache.get("ee00") is None and cache.missing(["ee00"]) == ["ee00"]


def test_keys_depend_on_content_transform_and_model(tmp_path: Path) -> None:
    make_images(tmp_path / "d")
    examples = plan_examples(tmp_path / "d")
    keys = {latent_key(ex, "m1") for ex in examples}
    assert len(keys) == len(examples)  # flips and sizes differ
    assert not keys & {latent_key(ex, "m2") for ex in examples}
    assert latent_key(examples[0], "m1", (0, 0, 0)) != latent_key(examples[0], "m1")
    assert text_key("a cat", "m1") != text_key("a cat", "m2") != text_key("a dog", "m2")


def test_fill_latents_encodes_only_missing_and_full_hit_skips_loading(tmp_path: Path) -> None:
    make_images(tmp_path / "d")
    examples = plan_examples(tmp_path / "d")
    cache, enc = TensorCache(tmp_path / "cache"), CountingEncoder()
    progress: list[tuple[int, int]] = []
    assert fill_latents(cache, examples, "m1", enc.load, batch_size=3, on_progress=lambda d, t: progress.append((d, t)))
    assert enc.loads == 1 and enc.encoded == len(examples) and progress[-1] == (len(examples), len(examples))
    ex = examples[0]
    latent = cache.get(latent_key(ex, "m1"))
    assert latent.shape == (4, ex.size[1] // 8, ex.size[0] // 8)
    # a full hit: the encoder is never loaded
    assert fill_latents(cache, examples, "m1", enc.load) == 0 and enc.loads == 1
    # a changed image invalidates only its own entries (plain + mirrored)
    Image.fromarray(np.full((64, 64, 3), 250, dtype=np.uint8)).save(tmp_path / "d" / "0.png")
    changed = plan_examples(tmp_path / "d")
    assert fill_latents(cache, changed, "m1", enc.load) == 2 and enc.loads == 2
    # another model misses everything
    assert len(cache.missing(latent_key(e, "m2") for e in changed)) == len(changed)
    assert missing_examples(cache, changed, "m1") == [] and missing_examples(cache, changed, "m2") == changed
    same_size = [e for e in changed if e.size == changed[0].size]
    stacked = batch_latents(cache, same_size, "m1")
    assert stacked.shape[0] == len(same_size) and torch.equal(stacked[0], cache.get(latent_key(same_size[0], "m1")))
    with pytest.raises(KeyError, match="no cached latent"):
        batch_latents(cache, same_size, "m2")


def test_interrupted_fill_resumes(tmp_path: Path) -> None:
    make_images(tmp_path / "d", 6)
    examples = plan_examples(tmp_path / "d")
    cache = TensorCache(tmp_path / "cache")
    calls = {"n": 0}

    def failing_loader():
        def encode(pixels: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt
            return torch.zeros(pixels.shape[0], 4, pixels.shape[2] // 8, pixels.shape[3] // 8)

        return encode

    with pytest.raises(KeyboardInterrupt):
        fill_latents(cache, examples, "m", failing_loader, batch_size=2)
    done_before = len(examples) - len(cache.missing(latent_key(e, "m") for e in examples))
    assert done_before == 2
    enc = CountingEncoder()
    assert fill_latents(cache, examples, "m", enc.load, batch_size=2) == len(examples) - 2
    assert not cache.missing(latent_key(e, "m") for e in examples)


def test_fill_text(tmp_path: Path) -> None:
    cache = TensorCache(tmp_path, "text")
    loads = []

    def loader():
        loads.append(1)
        return lambda caps: [{"hidden": torch.full((2, 3), float(len(c)))} for c in caps]

    assert fill_text(cache, ["a", "bb", "a"], "m", loader) == 2
    assert fill_text(cache, ["a", "bb"], "m", loader) == 0 and len(loads) == 1
    assert cache.get(text_key("bb", "m"))["hidden"][0, 0].item() == 2.0
