"""Turn examples into model inputs: VAE latents and text-encoder outputs, cached in memory and optionally on disk.

With the disk cache, `prefill` encodes only what is missing (resumable: each entry is written atomically) and a
full hit never runs the VAE or the text encoders.

A use that carries an augmentation seed (the sampler's, with data.color_aug / data.random_crop) is encoded from its
own augmented pixels each time and never cached: its pixels differ from use to use.

Loss masks (train.masked_loss) are cut as their pixels and averaged to the latent size; with latent caching they are
cached beside the latents (in memory, and on disk under their own keys), a use with an augmentation seed cuts its own.

A run that reads images each step (latents not cached, or augmented uses) can have them decoded ahead in worker
processes (`prefetching`, train.dataloader_workers; engine/prefetch.py); the results are the same bits.

With `offload`, the VAE and the text encoders leave the device once prefill has cached everything they would
compute (sd-scripts moves the VAE to the CPU after caching latents, train_network.py), and come back when needed:
`encoders_on_device()` around a sample render (as sd-scripts' sample_images_common moves the VAE there and back), or
by themselves when something uncached is asked for.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from ..data.cache import TensorCache, batch_latents, fill_latents, fill_text, mask_key, text_key
from ..data.example import BatchSampler, Example
from ..data.transforms import Augment
from ..families import ModelParts
from .loop import Position
from .loss import latent_mask
from .prefetch import Identity, PixelPrefetcher, use_identity, use_mask, use_pixels, worker_count

Progress = Callable[[str, int, int], None]


def cache_model_id(family: str, identity: str, dtype: torch.dtype) -> str:
    """The model part of every cache key: family, weights identity and compute precision."""
    return f"{family}:{identity}:{str(dtype).removeprefix('torch.')}"


class BatchEncoder:
    """Encodes images and captions; caches latents per example key and text outputs per caption.

    `offload`: move the VAE / text encoders off the device once prefill has cached all they would compute (the
    renderer must then wrap a render in `encoders_on_device()`); `on_notice` receives the line that says so."""

    offload_device = torch.device("cpu")  # where idle encoders wait

    def __init__(self, parts: ModelParts, device: torch.device, dtype: torch.dtype, cache_latents: bool,
                 cache_text: bool, seed: int, disk_dir: Path | None = None, augment: Augment | None = None,
                 offload: bool = False, on_notice: Callable[[str], None] | None = None) -> None:
        self.parts, self.device, self.dtype = parts, device, dtype
        self.augment = augment or Augment()
        self.cache_latents, self.cache_text = cache_latents, cache_text
        self.latents: dict[str, torch.Tensor] = {}
        self.texts: dict[str, dict[str, torch.Tensor]] = {}
        self.gen = torch.Generator(device="cpu")
        self.reseed(seed)
        self.model_id = cache_model_id(parts.family.name, parts.identity, dtype)
        self.disk = (TensorCache(disk_dir, "latents"), TensorCache(disk_dir, "text")) if disk_dir else None
        self.masks: dict[str, torch.Tensor] = {}  # mask_key → (1, h, w) float32 on the device
        self.mask_disk = TensorCache(disk_dir, "masks") if disk_dir else None
        self.offload, self.on_notice = offload, on_notice
        self.offloaded: list[torch.nn.Module] = []  # encoders waiting off the device
        self.prefetcher: PixelPrefetcher | None = None
        self.prefetch_stats: Counter[str] = Counter()  # over the run's stages (see PixelPrefetcher.stats)
        self._ready_masks: dict[Identity, torch.Tensor] = {}  # pixel masks of the last prefetched batch

    @property
    def text_model_id(self) -> str:
        """The model part of text cache keys: the model's, plus how prompts are encoded (train.clip_skip and
        train.max_token_length change the outputs, so another setting's cached encodings must not be reused)."""
        tag = self.parts.prompt_encoding.cache_tag()
        return f"{self.model_id};{tag}" if tag else self.model_id

    def reseed(self, seed: int) -> None:
        """Restart the draws of latent samples from the run's seed (a mode's later stage does, as a new run would)."""
        self.gen.manual_seed(seed + 1)

    @torch.no_grad()
    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Scaled VAE latents of a pixel batch in [-1, 1] (a sample of the latent distribution, as kohya caches), in
        fp32 whatever the VAE's precision: the noising that follows needs them exact (issue 12)."""
        vae = self._on_device(self.parts.vae)
        with torch.autocast(self.device.type, enabled=False):  # the VAE's own precision (force_upcast: fp32), not
            dist = vae.encode(pixels.to(self.device, vae.dtype, non_blocking=True)).latent_dist  # the training's
        mean, std = dist.mean.float(), dist.std.float()
        noise = torch.randn(mean.shape, generator=self.gen).to(mean)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((mean + std * noise) - shift) * vae.config.scaling_factor

    def encode_images(self, examples: list[Example]) -> torch.Tensor:
        """Latents of a batch of one size, from pixels decoded ahead by the workers when they have this batch,
        else straight from the files."""
        ready = self.prefetcher.take(examples) if self.prefetcher is not None else None
        if ready is None or ready.pixels is None:
            return self.encode_pixels(torch.from_numpy(np.stack([self.pixels(e) for e in examples])))
        self._ready_masks = ready.masks
        return self.encode_pixels(ready.pixels)  # pinned on CUDA: the copy overlaps

    def pixels(self, example: Example) -> np.ndarray:
        """An example's pixels; a use with an augmentation seed gets its own random crop and colour change."""
        return use_pixels(example, self.augment)

    def image_latents(self, examples: list[Example]) -> torch.Tensor:
        """Latents of a batch (fp32; the UNet's input is cast to the compute precision only after noising), from the
        cache when enabled."""
        if not self.cache_latents or any(e.aug_seed is not None for e in examples):
            return self.encode_images(examples).float()
        missing = [e for e in examples if e.key not in self.latents]
        if missing:
            for e, lat in zip(missing, self.encode_images(missing)):
                self.latents[e.key] = lat.float()
        return torch.stack([self.latents[e.key] for e in examples])

    def loss_masks(self, examples: list[Example], latent_size: tuple[int, int]) -> torch.Tensor | None:
        """(B, 1, h, w) float32 loss masks of a batch at the latent size; None when no example has a mask. An
        example without one gets ones (sd-scripts fills a batch's missing masks with ones)."""
        if all(e.mask is None for e in examples):
            return None
        size = (int(latent_size[0]), int(latent_size[1]))
        ones = torch.ones((1, *size), device=self.device)
        return torch.stack([ones if e.mask is None else self._mask(e, size) for e in examples])

    def _mask(self, example: Example, size: tuple[int, int]) -> torch.Tensor:
        if not self.cache_latents or example.aug_seed is not None:
            return self._cut_mask(example, size)
        key = mask_key(example, size)
        if key not in self.masks:
            value = self.mask_disk.get(key) if self.mask_disk else None
            if not isinstance(value, torch.Tensor):
                value = self._cut_mask(example, size)
                if self.mask_disk:
                    self.mask_disk.put(key, value)
            self.masks[key] = value.to(self.device)
        return self.masks[key]

    def _cut_mask(self, example: Example, size: tuple[int, int]) -> torch.Tensor:
        """The mask of this use: a use with an augmentation seed is cropped with its own random offsets (the
        workers cut it with the batch's pixels when they prefetch)."""
        ready = self._ready_masks.get(use_identity(example))
        if ready is None:
            cut = use_mask(example, self.augment)
            assert cut is not None
            ready = torch.from_numpy(cut)
        return latent_mask(ready, size).to(self.device)

    def prefill(self, examples: list[Example], batch_size: int, progress: Progress | None = None) -> None:
        """Encode every image (and caption) once up front, so the training loop never waits on the encoders."""
        unique = list({e.key: e for e in examples}.values())
        if self.cache_latents and self.disk:
            fill_latents(self.disk[0], unique, self.model_id, lambda: self.encode_pixels, batch_size=batch_size,
                         on_progress=progress and (lambda d, n: progress("latents", d, n)))
            for e in unique:
                latent = batch_latents(self.disk[0], [e], self.model_id)[0]
                self.latents[e.key] = latent.to(self.device, torch.float32)
        elif self.cache_latents:
            by_size: dict[tuple[int, int], list[Example]] = {}
            for e in unique:
                by_size.setdefault(e.size, []).append(e)
            for group in by_size.values():
                for i in range(0, len(group), batch_size):
                    self.image_latents(group[i : i + batch_size])
        if self.cache_latents:  # the loss masks, with the latents (their size is the latents')
            for e in unique:
                if e.mask is not None:
                    self._mask(e, tuple(self.latents[e.key].shape[-2:]))
        if self.cache_text:
            self._prefill_text(list(dict.fromkeys(e.caption for e in examples)), batch_size, progress)
        if self.offload:
            self._release_idle()

    def _prefill_text(self, captions: list[str], batch_size: int, progress: Progress | None) -> None:
        if self.disk:
            fill_text(self.disk[1], captions, self.text_model_id, lambda: self._encode_captions,
                      on_progress=progress and (lambda d, n: progress("captions", d, n)))
            for c in captions:
                value = self.disk[1].get(text_key(c, self.text_model_id))
                self.texts[c] = {k: v.to(self.device) for k, v in value.items()}
        else:  # in batches of the training batch size: one batch of every caption could exhaust the device
            for i in range(0, len(captions), batch_size):
                self.text_conditioning(captions[i : i + batch_size])

    @torch.no_grad()
    def _encode_captions(self, captions: list[str]) -> list[dict[str, torch.Tensor]]:
        self._text_encoders_on_device()
        out = self.parts.family.encode_prompts(self.parts, captions)
        return [{k: v[i].cpu() for k, v in out.items()} for i in range(len(captions))]

    def text_conditioning(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Text-encoder outputs for captions (cached per caption when the text encoder is frozen)."""
        fam = self.parts.family
        if not self.cache_text:
            self._text_encoders_on_device()
            return fam.encode_prompts(self.parts, captions)
        missing = list(dict.fromkeys(c for c in captions if c not in self.texts))
        if missing:
            self._text_encoders_on_device()
            with torch.no_grad():
                out = fam.encode_prompts(self.parts, missing)
            for i, cap in enumerate(missing):
                self.texts[cap] = {k: v[i] for k, v in out.items()}
        return {k: torch.stack([self.texts[c][k] for c in captions]) for k in self.texts[captions[0]]}

    # -- pixels decoded ahead (train.dataloader_workers) -----------------------------------------------------------
    def prefetch_from(self, sampler: BatchSampler, position: Position, workers: int, masks: bool = False) -> None:
        """Decode the images of the sampler's batches from `position` on (epoch after epoch, the loop's order) in
        `workers` processes, when this run reads images each step and `workers` > 0; else nothing changes.
        `masks`: cut the loss masks there too (train.masked_loss). Stop it with `close_prefetch`."""
        self.close_prefetch()
        workers = worker_count(workers)
        if workers == 0 or (self.cache_latents and not self.augment.active):
            return  # no workers: as before; every latent cached: the loop never reads an image
        first = next(iter(sampler.batches(position.epoch)), None)
        if not first or not all(isinstance(e, Example) for e in first):
            return  # a task that trains on prompts, not images (ILECO)
        self.prefetcher = PixelPrefetcher(sampler, position, workers, self.augment, masks,
                                          pin=self.device.type == "cuda")

    def close_prefetch(self) -> str | None:
        """Stop the workers (at a stage's end, and on any exception); returns a line for the run log, or None
        when there were none."""
        prefetcher, self.prefetcher = self.prefetcher, None
        self._ready_masks = {}
        if prefetcher is None:
            return None
        prefetcher.close()
        self.prefetch_stats.update(prefetcher.stats)
        return prefetcher.summary()

    @contextmanager
    def prefetching(self, sampler: BatchSampler, position: Position, workers: int, masks: bool = False,
                    on_summary: Callable[[str], None] | None = None) -> Iterator[None]:
        """`prefetch_from` for the duration of the block; the workers stop however it ends."""
        self.prefetch_from(sampler, position, workers, masks)
        try:
            yield
        finally:
            summary = self.close_prefetch()
            if summary and on_summary:
                on_summary(summary)

    # -- encoders off the device while idle ------------------------------------------------------------------------
    def _release_idle(self) -> None:
        """After prefill: the VAE off the device when every latent is cached (no augmented uses), the text encoders
        when every caption is and they are not trained; the notice says how many bytes of weights moved."""
        idle: list[tuple[str, torch.nn.Module]] = []
        vae = self.parts.vae
        if vae is not None and self.cache_latents and not self.augment.active:
            idle.append(("the VAE", vae))
        if self.cache_text:
            tes = [te for te in self.parts.text_encoders if not any(p.requires_grad for p in te.parameters())]
            idle += [("the text encoder" if len(tes) == 1 else f"text encoder {i + 1}", te) for i, te in enumerate(tes)]
        idle = [(name, m) for name, m in idle if all(m is not o for o in self.offloaded)]
        if not idle or self.device == self.offload_device:
            return
        moved = 0
        for _, module in idle:
            moved += module_bytes(module)
            module.to(self.offload_device)
            self.offloaded.append(module)
        if self.on_notice:
            names = ", ".join(name for name, _ in idle)
            self.on_notice(f"{names} moved to the {self.offload_device.type} once every latent and caption they "
                           f"encode was cached: {moved / 2**20:.0f} MiB of weights off the {self.device.type}")

    def _on_device(self, module: torch.nn.Module) -> torch.nn.Module:
        """`module`, brought back to the device if it was moved off (something uncached was asked for)."""
        for i, waiting in enumerate(self.offloaded):
            if waiting is module:
                module.to(self.device)
                del self.offloaded[i]
                break
        return module

    def _text_encoders_on_device(self) -> None:
        for te in self.parts.text_encoders:
            self._on_device(te)

    @contextmanager
    def encoders_on_device(self) -> Iterator[None]:
        """Within: the encoders moved off the device are back on it (a sample render uses the VAE and the text
        encoders); on exit they leave again. Without offloading, nothing moves."""
        back = list(self.offloaded)
        for module in back:
            self._on_device(module)
        try:
            yield
        finally:
            for module in back:
                if all(module is not o for o in self.offloaded):
                    module.to(self.offload_device)
                    self.offloaded.append(module)


def module_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers (what moving it frees on its device)."""
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def size_conditioning(examples: list[Example]) -> list[dict[str, Any]]:
    """Per-example (height, width) sizes for SDXL's micro-conditioning."""
    out = []
    for e in examples:
        target = (e.size[1], e.size[0])
        out.append({"original_size": e.original_size or target, "crop_top_left": e.crop_top_left,
                    "target_size": target})
    return out
