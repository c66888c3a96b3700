"""Turn examples into model inputs: VAE latents and text-encoder outputs, cached in memory when allowed."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.example import Example
from ..data.transforms import load_pixels
from ..families import ModelParts


class BatchEncoder:
    """Encodes images and captions; caches latents per example key and text outputs per caption."""

    def __init__(self, parts: ModelParts, device: torch.device, dtype: torch.dtype, cache_latents: bool,
                 cache_text: bool, seed: int) -> None:
        self.parts, self.device, self.dtype = parts, device, dtype
        self.cache_latents, self.cache_text = cache_latents, cache_text
        self.latents: dict[str, torch.Tensor] = {}
        self.texts: dict[str, dict[str, torch.Tensor]] = {}
        self.gen = torch.Generator(device="cpu").manual_seed(seed + 1)
        vae = parts.vae.config
        self.scale, self.shift = vae.scaling_factor, getattr(vae, "shift_factor", None) or 0.0

    @torch.no_grad()
    def encode_images(self, examples: list[Example]) -> torch.Tensor:
        """Scaled VAE latents of a batch (a sample of the latent distribution, as kohya caches it)."""
        pixels = torch.from_numpy(np.stack([load_pixels(e) for e in examples]))
        pixels = pixels.to(self.device, self.parts.vae.dtype)
        dist = self.parts.vae.encode(pixels).latent_dist
        noise = torch.randn(dist.mean.shape, generator=self.gen).to(dist.mean)
        return ((dist.mean + dist.std * noise) - self.shift) * self.scale

    def image_latents(self, examples: list[Example]) -> torch.Tensor:
        """Latents of a batch, from the cache when enabled."""
        if not self.cache_latents:
            return self.encode_images(examples).to(self.dtype)
        missing = [e for e in examples if e.key not in self.latents]
        if missing:
            for e, lat in zip(missing, self.encode_images(missing)):
                self.latents[e.key] = lat.to(self.dtype)
        return torch.stack([self.latents[e.key] for e in examples])

    def prefill(self, examples: list[Example], batch_size: int) -> None:
        """Encode every image once up front (so the training loop never waits on the VAE)."""
        if self.cache_latents:
            todo = list({e.key: e for e in examples if e.key not in self.latents}.values())
            for i in range(0, len(todo), batch_size):
                self.image_latents(todo[i : i + batch_size])
        if self.cache_text:
            self.text_conditioning(list(dict.fromkeys(e.caption for e in examples)))

    def text_conditioning(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Text-encoder outputs for captions (cached per caption when the text encoder is frozen)."""
        fam = self.parts.family
        if not self.cache_text:
            return fam.encode_prompts(self.parts, captions)
        missing = list(dict.fromkeys(c for c in captions if c not in self.texts))
        if missing:
            with torch.no_grad():
                out = fam.encode_prompts(self.parts, missing)
            for i, cap in enumerate(missing):
                self.texts[cap] = {k: v[i] for k, v in out.items()}
        return {k: torch.stack([self.texts[c][k] for c in captions]) for k in self.texts[captions[0]]}


def size_conditioning(examples: list[Example]) -> list[dict[str, Any]]:
    """Per-example (height, width) sizes for SDXL's micro-conditioning."""
    out = []
    for e in examples:
        target = (e.size[1], e.size[0])
        out.append({"original_size": e.original_size or target, "crop_top_left": e.crop_top_left, "target_size": target})
    return out
