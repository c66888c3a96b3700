"""Building blocks for tiny random models: a character-level CLIP tokenizer made in memory, small configs.

Tiny models are the demo's and the tests' base model: built from configs with a fixed seed, offline, in seconds.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import torch
from transformers import CLIPTextConfig, CLIPTokenizer

TINY_MAX_LENGTH = 32


def _byte_chars() -> list[str]:
    """The 256 printable characters CLIP's byte-level BPE maps bytes to."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


@lru_cache(maxsize=None)
def _tiny_tokenizer_dir() -> str:
    """A folder with a character-level CLIP vocabulary (no merges): every text tokenizes, offline."""
    chars = _byte_chars()
    vocab = {tok: i for i, tok in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder = Path(tempfile.mkdtemp(prefix="lorakit-tiny-tok-"))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return str(folder)


def tiny_tokenizer(pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """A CLIP tokenizer over single characters, `model_max_length` = TINY_MAX_LENGTH."""
    return CLIPTokenizer.from_pretrained(
        _tiny_tokenizer_dir(), model_max_length=TINY_MAX_LENGTH, pad_token=pad_token
    )


def tiny_text_config(hidden: int = 32, projection: int = 32, layers: int = 2) -> CLIPTextConfig:
    """A small CLIP text-encoder config matching `tiny_tokenizer`'s vocabulary."""
    return CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_attention_heads=4,
        num_hidden_layers=layers,
        vocab_size=514,
        max_position_embeddings=TINY_MAX_LENGTH,
        projection_dim=projection,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )


def tiny_vae_config() -> dict:
    """A small AutoencoderKL config (8× downsampling like the real VAE)."""
    return dict(
        block_out_channels=(16, 32, 32, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=8,
        layers_per_block=1,
        sample_size=64,
    )


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build modules with a fixed seed without disturbing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
