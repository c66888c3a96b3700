"""On-disk cache of VAE latents and text-encoder outputs (the only data module that imports torch).

Each entry is its own `.safetensors` file named by a key that hashes everything its value depends on: the file's
content hash, the transform (bucket size, crop, flip, background) and the model identity string the engine passes
(e.g. "sd1:<model hash>:<vae hash>:fp16"). A changed image or model therefore misses only its own entries; an
interrupted run keeps every entry already written (writes are atomic), so the next run resumes. Loss masks
(train.masked_loss) are cached beside the latents in their own namespace, keyed by the mask's source (`mask_key`).

The engine's flow: `missing = cache.missing(keys)`; only when it is non-empty run the VAE through
`fill_latents` — a full hit never runs the VAE.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..io import atomic_path
from .example import Example
from .transforms import RGB, WHITE, load_pixels

CACHE_VERSION = "1"
Value = torch.Tensor | dict[str, torch.Tensor]
Progress = Callable[[int, int], None]
_SINGLE = "value"


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/lorakit, or ~/.cache/lorakit."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lorakit"


def cache_key(*parts: str) -> str:
    """A stable key from its parts (SHA-256 hex)."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    for part in parts:
        h.update(b"\x00" + part.encode())
    return h.hexdigest()


def latent_key(example: Example, model_id: str, background: RGB = WHITE) -> str:
    """Key of an example's latent: file content, bucket size, crop, flip, background and model identity."""
    source = example.fingerprint or f"path:{example.image.resolve()}:{example.image.stat().st_mtime_ns}"
    w, h = example.size
    top, left = example.crop_top_left
    transform = f"{w}x{h};crop={top},{left};flip={int(example.flip)};bg={background};lanczos"
    return cache_key("latent", model_id, source, transform)


def mask_key(example: Example, latent_size: tuple[int, int]) -> str:
    """Key of an example's loss mask at a latent size (height, width): the mask's content (the mask file's, or the
    image's for its alpha channel; path and time when not hashed), its kind and the cut (size, resize, crop, flip).
    A changed mask file therefore misses; the latents of its image stay cached."""
    mask = example.mask
    if mask is None:
        raise ValueError(f"{example.image} has no mask")
    source = mask.fingerprint or (example.fingerprint if mask.kind == "alpha" else "") or \
        f"path:{mask.path.resolve()}:{mask.path.stat().st_mtime_ns}"
    w, h = example.size
    top, left = example.crop_top_left
    resized = f"{example.resized[0]}x{example.resized[1]}" if example.resized else "cover"
    cut = f"{w}x{h};resized={resized};crop={top},{left};flip={int(example.flip)};lanczos"
    return cache_key("mask", mask.kind, source, cut, f"area={latent_size[0]}x{latent_size[1]}")


def text_key(caption: str, model_id: str) -> str:
    """Key of a caption's text-encoder outputs for one model."""
    return cache_key("text", model_id, caption)


class TensorCache:
    """A folder of cached tensors, one file per key, in a namespace ('latents', 'text', …)."""

    def __init__(self, root: Path | str | None = None, namespace: str = "latents") -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.folder = self.root / namespace

    def path(self, key: str) -> Path:
        """The file of a key (two-level fan-out keeps folders small)."""
        return self.folder / key[:2] / f"{key}.safetensors"

    def has(self, key: str) -> bool:
        """Whether an entry exists (not whether it loads)."""
        return self.path(key).is_file()

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys without an entry, in order, without duplicates. Cheap: no file is opened."""
        seen: set[str] = set()
        out = []
        for key in keys:
            if key not in seen and not self.has(key):
                out.append(key)
            seen.add(key)
        return out

    def get(self, key: str) -> Value | None:
        """The cached value, or None when absent; a damaged entry is deleted and reported as absent."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError):
            path.unlink(missing_ok=True)
            return None
        return tensors[_SINGLE] if set(tensors) == {_SINGLE} else tensors

    def put(self, key: str, value: Value) -> None:
        """Store a tensor (or a dict of tensors) atomically: a temporary file renamed into place."""
        path = self.path(key)
        tensors = {_SINGLE: value} if isinstance(value, torch.Tensor) else dict(value)
        tensors = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}  # no shared storage
        size = sum(t.numel() * t.element_size() for t in tensors.values()) + 100 * len(tensors) + 8
        with atomic_path(path, size) as tmp:  # creates the folder; a full disk is a DiskFullError naming the file
            save_file(tensors, str(tmp))


def missing_examples(cache: TensorCache, examples: Sequence[Example], model_id: str,
                     background: RGB = WHITE) -> list[Example]:
    """Examples whose latents are not cached (distinct, in order). Empty means: the VAE need not run at all."""
    out, seen = [], set()
    for ex in examples:
        key = latent_key(ex, model_id, background)
        if key not in seen and not cache.has(key):
            out.append(ex)
        seen.add(key)
    return out


def batch_latents(cache: TensorCache, examples: Sequence[Example], model_id: str, background: RGB = WHITE
                  ) -> torch.Tensor:
    """The cached latents of a batch (one bucket size), stacked; a missing entry is a `KeyError` naming the image."""
    latents = []
    for ex in examples:
        value = cache.get(latent_key(ex, model_id, background))
        if not isinstance(value, torch.Tensor):
            raise KeyError(f"no cached latent for {ex.image} at {ex.size[0]}x{ex.size[1]} (flip={ex.flip})")
        latents.append(value)
    return torch.stack(latents)


def _batches_by_size(examples: Sequence[tuple[str, Example]], batch_size: int) -> list[list[tuple[str, Example]]]:
    by_size: dict[tuple[int, int], list[tuple[str, Example]]] = {}
    for item in examples:
        by_size.setdefault(item[1].size, []).append(item)
    return [group[i : i + batch_size] for group in by_size.values() for i in range(0, len(group), batch_size)]


def fill_latents(
    cache: TensorCache,
    examples: Sequence[Example],
    model_id: str,
    load_encoder: Callable[[], Callable[[torch.Tensor], torch.Tensor]],
    *,
    batch_size: int = 8,
    background: RGB = WHITE,
    workers: int = 4,
    on_progress: Progress | None = None,
) -> int:
    """Encode and store the latents that are missing; returns how many were encoded.

    `load_encoder()` is called only if something is missing; it returns a function from a float batch
    (B, 3, H, W) in [-1, 1] to latents (B, C, H/8, W/8) — e.g. a VAE's scaled `encode(...).latent_dist.mean`.
    """
    keyed = [(latent_key(ex, model_id, background), ex) for ex in examples]
    todo_keys = set(cache.missing(k for k, _ in keyed))
    todo, seen = [], set()
    for key, ex in keyed:
        if key in todo_keys and key not in seen:
            todo.append((key, ex))
            seen.add(key)
    if not todo:
        return 0
    encode = load_encoder()
    done = 0
    if on_progress:
        on_progress(0, len(todo))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for batch in _batches_by_size(todo, batch_size):
            pixels = list(pool.map(lambda item: load_pixels(item[1], background), batch))
            with torch.no_grad():
                latents = encode(torch.from_numpy(np.stack(pixels)))
            for (key, _), latent in zip(batch, latents):
                cache.put(key, latent)
            done += len(batch)
            if on_progress:
                on_progress(done, len(todo))
    return done


def fill_text(
    cache: TensorCache,
    captions: Sequence[str],
    model_id: str,
    load_encoder: Callable[[], Callable[[list[str]], list[Value]]],
    *,
    batch_size: int = 32,
    on_progress: Progress | None = None,
) -> int:
    """Encode and store the text-encoder outputs of captions that are missing; returns how many were encoded.

    `load_encoder()` is called only if something is missing; it returns a function from a list of captions to one
    value (a tensor or a dict of tensors, e.g. hidden states and pooled output) per caption.
    """
    todo = list(dict.fromkeys(c for c in captions if not cache.has(text_key(c, model_id))))
    if not todo:
        return 0
    encode = load_encoder()
    for i in range(0, len(todo), batch_size):
        chunk = todo[i : i + batch_size]
        with torch.no_grad():
            values = encode(chunk)
        for caption, value in zip(chunk, values):
            cache.put(text_key(caption, model_id), value)
        if on_progress:
            on_progress(min(i + batch_size, len(todo)), len(todo))
    return len(todo)
