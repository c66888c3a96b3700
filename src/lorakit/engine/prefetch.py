"""Pixels decoded ahead of the GPU (train.dataloader_workers): a torch DataLoader whose worker processes decode,
resize and augment the images of the batches the loop will ask for next, in the loop's order.

It is only a head start. The encoder asks for a batch by its uses' identity (example key, augmentation seed, mask
source): the batch the loop expects comes from the workers; anything else — a retried half batch, a validation batch,
a batch after the order was left — is loaded in the training process as without workers. Both give the same bits:
the pixels of a use are a pure function of its identity (`use_pixels`), whichever process computes them. Batches
the loop skipped (an out-of-memory retry that split its window) are dropped to get back in step.

Workers never touch CUDA: they return CPU tensors, pinned by the DataLoader on CUDA so that the copy to the GPU can
be asynchronous. As in sd-scripts (train_network.py: `min(args.max_data_loader_n_workers, os.cpu_count())`), there
are no more workers than CPU cores.
"""

from __future__ import annotations

import os
import random
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.example import BatchSampler, Example, MaskSource
from ..data.transforms import Augment, example_mask, load_pixels
from .loop import Position

PREFETCH_FACTOR = 2  # batches in flight per worker: the next steps' images, without holding an epoch in memory
Identity = tuple[str, int | None, MaskSource | None]


def use_identity(example: Example) -> Identity:
    """What a use's pixels and mask depend on: the example's key, its augmentation seed and its mask source."""
    return example.key, example.aug_seed, example.mask


def use_pixels(example: Example, augment: Augment) -> np.ndarray:
    """A use's pixels (float32 CHW in [-1, 1]); one with an augmentation seed gets its own crop and colour change."""
    if example.aug_seed is None:
        return load_pixels(example)
    return load_pixels(example, augment=augment, rng=random.Random(example.aug_seed))


def use_mask(example: Example, augment: Augment) -> np.ndarray | None:
    """A use's loss mask at its pixel size (None without one), cut as `use_pixels` cuts the image."""
    rng = random.Random(example.aug_seed) if example.aug_seed is not None else None
    return example_mask(example, augment if rng else None, rng)


@dataclass
class Prefetched:
    """One batch as a worker hands it over: stacked pixels, per-use pixel masks (only when asked for), and the
    process that decoded it. `pixels` is None when the worker failed: the training process loads the batch itself,
    and reports the file's error as it would without workers."""

    pixels: torch.Tensor | None
    masks: dict[Identity, torch.Tensor]
    pid: int

    def pin_memory(self) -> Prefetched:
        """Page-locked copies (the DataLoader's pin-memory thread calls this), for non-blocking copies to the GPU."""
        pixels = self.pixels.pin_memory() if self.pixels is not None else None
        return Prefetched(pixels, {k: m.pin_memory() for k, m in self.masks.items()}, self.pid)


class _BatchPixels(Dataset):
    """Map-style dataset whose index is a whole batch (a list of examples): a worker loads it in one go."""

    def __init__(self, augment: Augment, masks: bool) -> None:
        self.augment, self.masks = augment, masks

    def __getitem__(self, batch: list[Example]) -> Prefetched:  # type: ignore[override]
        try:
            pixels: dict[Identity, np.ndarray] = {}
            masks: dict[Identity, torch.Tensor] = {}
            for e in batch:  # a batch may hold one use several times (Difference mode repeats its image)
                ident = use_identity(e)
                if ident not in pixels:
                    pixels[ident] = use_pixels(e, self.augment)
                    mask = use_mask(e, self.augment) if self.masks and e.mask is not None else None
                    if mask is not None:
                        masks[ident] = torch.from_numpy(mask)
            stacked = torch.from_numpy(np.stack([pixels[use_identity(e)] for e in batch]))
            return Prefetched(stacked, masks, os.getpid())
        except Exception:  # a bad file: the training process loads it again and raises its own clear error
            return Prefetched(None, {}, os.getpid())


def _as_is(item: Prefetched) -> Prefetched:
    return item


def batch_order(sampler: BatchSampler, start: Position) -> Iterator[list[Any]]:
    """The sampler's batches epoch after epoch from `start`, as the loop's `Batches` walks them."""
    epoch, skip = start.epoch, start.batch
    while True:
        batches = list(sampler.batches(epoch))
        if not batches:
            return
        yield from batches[skip:]
        epoch, skip = epoch + 1, 0


class PixelPrefetcher:
    """Worker processes that load the loop's next batches; `take` hands over a batch when it is the one asked for."""

    def __init__(self, sampler: BatchSampler, start: Position, workers: int, augment: Augment, masks: bool = False,
                 pin: bool = False) -> None:
        if workers < 1:
            raise ValueError(f"a prefetcher needs at least one worker, got {workers}")
        self.workers = workers
        self.stats: Counter[str] = Counter()  # taken (from the workers), loaded here, skipped, failed
        self.pids: set[int] = set()  # the processes that decoded the batches taken
        self.stopped = ""  # why the workers stopped early (a worker died: e.g. too little shared memory)
        self._pending: deque[tuple[Identity, ...]] = deque()  # batches sent to the workers, not yet received
        self._order = self._send(batch_order(sampler, Position(start.epoch, start.batch)))
        self._loader = DataLoader(_BatchPixels(augment, masks), batch_size=None, sampler=self._order,
                                  num_workers=workers, collate_fn=_as_is, pin_memory=pin,
                                  prefetch_factor=PREFETCH_FACTOR, persistent_workers=True)
        self._iter: Iterator[Prefetched] | None = iter(self._loader)

    def _send(self, order: Iterator[list[Any]]) -> Iterator[list[Any]]:
        """The DataLoader's index source: each batch's identity is noted as it goes out to a worker."""
        for batch in order:
            self._pending.append(tuple(use_identity(e) for e in batch))
            yield batch

    def take(self, examples: list[Example]) -> Prefetched | None:
        """The prefetched batch of these uses, or None (load them in this process): not among the batches in
        flight, or the worker failed. Batches in flight before the one asked for are dropped."""
        wanted = tuple(use_identity(e) for e in examples)
        if self._iter is None or wanted not in self._pending:
            self.stats["loaded here"] += 1
            return None
        while True:
            sent = self._pending.popleft()  # before next(): receiving one sends the next batch out
            try:
                item = next(self._iter)
            except RuntimeError as exc:  # a worker died (out of memory, a small /dev/shm), noticed here: go on
                self.stopped = str(exc).splitlines()[0][:200]
                self.close()
                self.stats["failed"] += 1
                return None
            if sent == wanted:
                break
            self.stats["skipped"] += 1
        if item.pixels is None:
            self.stats["failed"] += 1
            return None
        self.stats["taken"] += 1
        self.pids.add(item.pid)
        return item

    def close(self) -> None:
        """Stop the workers and drop the batches in flight (idempotent)."""
        it, self._iter = self._iter, None
        if it is not None:
            shutdown = getattr(it, "_shutdown_workers", None)  # what the iterator's __del__ calls; do it now
            if shutdown is not None:
                shutdown()
        self._order.close()
        self._pending.clear()
        self._loader = None  # type: ignore[assignment]

    def summary(self) -> str:
        """One line for the run log: how many batches the workers decoded ahead."""
        s = self.stats
        line = (f"{s['taken']} batches decoded ahead by {self.workers} worker process(es), {s['loaded here']} "
                "loaded in the training process (validation, retried halves)")
        return line + (f", {s['skipped']} dropped after a retry" if s["skipped"] else "") + \
            (f", {s['failed']} failed in a worker" if s["failed"] else "") + \
            (f"; the workers stopped early ({self.stopped}): check the free memory and /dev/shm's size"
             if self.stopped else "")


def worker_count(requested: int) -> int:
    """train.dataloader_workers, at most one per CPU core (sd-scripts' `min(max_data_loader_n_workers,
    os.cpu_count())`)."""
    return max(0, min(requested, os.cpu_count() or 1))
