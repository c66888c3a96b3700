"""Pixels decoded ahead in DataLoader workers (train.dataloader_workers), the in-memory text cache filled in
batches, and encoders moved off the device once everything they compute is cached.

The prefetched path must give the same bits as loading in the training process: the reference is the pixels of
each use computed directly from the transforms (sd-scripts' order, library/train_util.py BaseDataset.__getitem__:
crop offsets, colour change, mirror), and the synchronous encoder for latents, whose random draws come in the same
order. What a CPU-only machine cannot show: pinned memory and the asynchronous copy (pin_memory is off without
CUDA), and memory actually freed on a GPU (the offload tests fake a second device by recording `.to` calls).
"""

from __future__ import annotations

import os
import random
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.data.pipeline import build_dataset
from lorakit.data.transforms import Augment, load_pixels
from lorakit.engine import prefetch as prefetch_module
from lorakit.engine import trainer
from lorakit.engine.encode import BatchEncoder, module_bytes
from lorakit.engine.loop import Batches, Position, halves
from lorakit.engine.prefetch import PixelPrefetcher, batch_order
from lorakit.families import load_model

CPU = torch.device("cpu")
AUGMENTED = ("data.color_aug=true", "data.random_crop=true", "data.random_flip=true", "train.cache_latents=false")


def images(folder: Path, count: int = 5, alpha: bool = False) -> Path:
    """Noise images larger than the 64 px bucket (random_crop has room), left and right halves different."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for i in range(count):
        arr = rng.integers(0, 256, (80, 96, 4 if alpha else 3), dtype=np.uint8)
        Image.fromarray(arr, "RGBA" if alpha else "RGB").save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"noise picture {i}", encoding="utf-8")
    return folder


def config(tmp_path: Path, folder: Path, *extra: str):
    return load_config(sets=[
        f'data.train_data_dir="{folder}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        "train.learning_rate=2e-3", "train.max_train_steps=4", "network.network_dim=2", "train.train_batch_size=2",
        "data.cache_latents_to_disk=false", *extra,
    ])


@pytest.fixture(scope="module")
def parts():
    parts = load_model(load_config(sets=[]).model)
    parts.pipeline.unet.requires_grad_(False)  # frozen, as in a run (only attached networks train)
    for module in (parts.vae, *parts.text_encoders):
        module.requires_grad_(False)
    return parts


def encoder(parts, cfg, **kwargs) -> BatchEncoder:
    t = cfg.train
    return BatchEncoder(parts, CPU, torch.float32, t.cache_latents, kwargs.pop("cache_text", False), seed=5,
                        augment=Augment(color=cfg.data.color_aug, random_crop=cfg.data.random_crop), **kwargs)


def reference_pixels(batch, augment: Augment) -> np.ndarray:
    """Each use's pixels straight from the transforms: its own generator seeded with its augmentation seed."""
    return np.stack([load_pixels(e, augment=augment, rng=random.Random(e.aug_seed)) if e.aug_seed is not None
                     else load_pixels(e) for e in batch])


def test_batch_order_is_the_loops(tmp_path: Path) -> None:
    dataset = build_dataset(config(tmp_path, images(tmp_path / "i")).data, 2, 0)
    for start in (Position(1, 0), Position(2, 1)):
        loop = Batches(dataset.sampler, Position(start.epoch, start.batch))
        expected = [loop.next()[1] for _ in range(2 * len(dataset.sampler) + 1)]
        assert list(islice(batch_order(dataset.sampler, start), len(expected))) == expected


def test_workers_decode_the_same_pixels(tmp_path: Path) -> None:
    """Two worker processes decode the batches (not this process), across an epoch boundary, from a mid-epoch
    start; every use's pixels equal the transforms' own."""
    cfg = config(tmp_path, images(tmp_path / "i"), *AUGMENTED)
    sampler, augment = build_dataset(cfg.data, 2, 0).sampler, Augment(color=True, random_crop=True)
    start = Position(1, 1)
    batches = list(islice(batch_order(sampler, start), len(sampler) + 2))
    uses = [e for b in batches for e in b]
    assert all(e.aug_seed is not None for e in uses) and any(e.flip for e in uses)  # the test could fail
    prefetcher = PixelPrefetcher(sampler, start, 2, augment)
    try:
        for batch in batches:
            got = prefetcher.take(batch)
            assert got is not None and got.pixels is not None
            assert np.array_equal(got.pixels.numpy(), reference_pixels(batch, augment))
    finally:
        prefetcher.close()
    assert prefetcher.stats["taken"] == len(batches) and prefetcher.stats["loaded here"] == 0
    assert len(prefetcher.pids) == 2 and os.getpid() not in prefetcher.pids
    changed = sum(not np.array_equal(load_pixels(e), reference_pixels([e], augment)[0]) for e in uses)
    assert changed >= 1  # the augmentations changed some pixels: equality above is not trivial


def test_prefetched_latents_equal_synchronous(tmp_path: Path, parts) -> None:
    """The latents the loss gets (a sample of the VAE's distribution, from the encoder's generator) are the same
    bits with workers as without, over an epoch boundary and from a resumed position."""
    cfg = config(tmp_path, images(tmp_path / "i"), *AUGMENTED)
    sampler = build_dataset(cfg.data, 2, 0).sampler
    start = Position(2, 1)
    batches = list(islice(batch_order(sampler, start), len(sampler) + 1))
    sync, ahead = encoder(parts, cfg), encoder(parts, cfg)
    ahead.prefetch_from(sampler, start, 2)
    assert ahead.prefetcher is not None
    try:
        for batch in batches:
            assert torch.equal(ahead.image_latents(batch), sync.image_latents(batch))
    finally:
        summary = ahead.close_prefetch()
    assert ahead.prefetcher is None and summary and summary.startswith(f"{len(batches)} batches decoded ahead")
    assert ahead.prefetch_stats["taken"] == len(batches)


def test_retried_halves_and_other_batches_load_here(tmp_path: Path, parts) -> None:
    """An out-of-memory retry asks for halves of the step's batches (engine/loop.py `halves`), validation asks for
    batches outside the order: both are loaded in this process, and the next step's batch comes from the workers
    again, the window's unused batch dropped."""
    cfg = config(tmp_path, images(tmp_path / "i", count=8), *AUGMENTED)
    sampler = build_dataset(cfg.data, 2, 0).sampler
    b1, b2, b3, b4 = islice(batch_order(sampler, Position()), 4)
    other = [e for e in build_dataset(cfg.data, 2, 0).train[:2]]  # plain examples: no augmentation seed
    calls = [b1, *halves(b1, 2), *halves(b2, 2), other, b3, b4]  # step 1 (window b1, b2) retried, validation
    sync, ahead = encoder(parts, cfg), encoder(parts, cfg)
    ahead.prefetch_from(sampler, Position(), 1)
    try:
        for batch in calls:
            assert torch.equal(ahead.image_latents(batch), sync.image_latents(batch))
    finally:
        ahead.close_prefetch()
    stats = ahead.prefetch_stats
    assert (stats["taken"], stats["loaded here"], stats["skipped"]) == (3, 5, 1)


def test_masks_cut_by_the_workers_equal_synchronous(tmp_path: Path, parts) -> None:
    cfg = config(tmp_path, images(tmp_path / "i", alpha=True), *AUGMENTED, "data.alpha_mask=true",
                 "train.masked_loss=true")
    sampler = build_dataset(cfg.data, 2, 0).sampler
    batches = list(islice(batch_order(sampler, Position()), len(sampler) + 1))
    assert all(e.mask is not None for b in batches for e in b)
    sync, ahead = encoder(parts, cfg), encoder(parts, cfg)
    ahead.prefetch_from(sampler, Position(), 2, masks=True)
    try:
        for batch in batches:
            latents = ahead.image_latents(batch)
            assert ahead._ready_masks  # the masks came with the batch
            assert torch.equal(latents, sync.image_latents(batch))
            size = tuple(latents.shape[-2:])
            assert torch.equal(ahead.loss_masks(batch, size), sync.loss_masks(batch, size))
    finally:
        ahead.close_prefetch()
    assert ahead.prefetch_stats["taken"] == len(batches)


def test_no_workers_no_dataloader(tmp_path: Path, parts, monkeypatch: pytest.MonkeyPatch) -> None:
    """0 workers (or a run whose latents are all cached) starts nothing: today's path."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("no DataLoader expected")

    monkeypatch.setattr(prefetch_module, "DataLoader", refuse)
    uncached = config(tmp_path, images(tmp_path / "i"), *AUGMENTED)
    enc = encoder(parts, uncached)
    enc.prefetch_from(build_dataset(uncached.data, 2, 0).sampler, Position(), 0)
    assert enc.prefetcher is None and enc.close_prefetch() is None
    cached = config(tmp_path, images(tmp_path / "i"), "data.random_flip=true")  # flips: cached latents
    enc = encoder(parts, cached)
    enc.prefetch_from(build_dataset(cached.data, 2, 0).sampler, Position(), 2)
    assert enc.prefetcher is None


def test_a_failing_image_is_reported_by_the_training_process(tmp_path: Path, parts) -> None:
    cfg = config(tmp_path, images(tmp_path / "i"), *AUGMENTED)
    sampler = build_dataset(cfg.data, 2, 0).sampler
    first = next(batch_order(sampler, Position()))
    first[0].image.write_bytes(b"not an image")
    enc = encoder(parts, cfg)
    enc.prefetch_from(sampler, Position(), 1)
    try:
        with pytest.raises(Exception, match="cannot read image"):
            enc.image_latents(first)
    finally:
        enc.close_prefetch()
    assert enc.prefetch_stats["failed"] == 1


def test_workers_stop_when_the_stage_fails(tmp_path: Path, parts) -> None:
    """An exception in the loop (here: right after the first step's batch) stops the worker processes; nothing is
    left running to hang the interpreter's exit."""
    cfg = config(tmp_path, images(tmp_path / "i"), *AUGMENTED)
    sampler = build_dataset(cfg.data, 2, 0).sampler
    enc = encoder(parts, cfg)
    summaries: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with enc.prefetching(sampler, Position(), 2, on_summary=summaries.append):
            assert enc.prefetcher is not None
            processes = list(enc.prefetcher._iter._workers)  # type: ignore[union-attr]
            enc.image_latents(next(batch_order(sampler, Position())))
            raise KeyboardInterrupt
    assert enc.prefetcher is None and len(processes) == 2
    assert not any(p.is_alive() for p in processes)
    assert summaries and summaries[0].startswith("1 batches decoded ahead by 2 worker")


def wire_prefetch(monkeypatch: pytest.MonkeyPatch, seen: list[BatchEncoder]) -> None:
    """Around each stage's loop, as the trainer does (or should: added here only when it does not yet)."""
    loop = trainer.train_loop

    def with_prefetch(task, *args, **kwargs):
        enc = task.encoder
        seen.append(enc)
        if enc.prefetcher is not None:
            return loop(task, *args, **kwargs)
        state = args[8] if len(args) > 8 else kwargs.get("state")
        position = state.position if state is not None else Position()
        with enc.prefetching(task.sampler, position, task.cfg.train.dataloader_workers, task.masked_loss):
            return loop(task, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_loop", with_prefetch)


def test_training_with_workers_equals_without(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = images(tmp_path / "i")
    seen: list[BatchEncoder] = []
    wire_prefetch(monkeypatch, seen)
    runs = [api.train(config(tmp_path, folder, *AUGMENTED, f"train.dataloader_workers={n}")) for n in (2, 0)]
    with_workers, without = seen
    assert with_workers.prefetch_stats["taken"] == 4 and with_workers.prefetch_stats["loaded here"] == 0
    assert not without.prefetch_stats
    a, b = (load_file(r.lora_path) for r in runs)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- the in-memory text cache, in batches ------------------------------------------------------------------------
def test_text_cache_fills_in_training_batches(tmp_path: Path, parts, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(tmp_path, images(tmp_path / "i"))
    examples = build_dataset(cfg.data, 2, 0).examples
    captions = list(dict.fromkeys(e.caption for e in examples))
    assert len(captions) == 5
    family, sizes = parts.family, []
    encode = family.encode_prompts

    def recording(p, batch):
        sizes.append(len(batch))
        return encode(p, batch)

    enc = BatchEncoder(parts, CPU, torch.float32, False, True, seed=0)
    monkeypatch.setattr(family, "encode_prompts", recording)
    enc.prefill(examples, 2)
    monkeypatch.undo()
    assert sizes == [2, 2, 1]
    for caption in captions:  # each caption's outputs as it alone encodes
        alone = encode(parts, [caption])
        assert enc.texts[caption].keys() == alone.keys()
        for k, v in alone.items():
            assert torch.equal(enc.texts[caption][k], v[0])


# -- encoders off the device once everything is cached -------------------------------------------------------------
class Moves:
    """Records `.to` calls on the VAE and text encoders without moving them: this machine has one device."""

    def __init__(self, parts, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, torch.device]] = []
        for name, module in [("vae", parts.vae)] + [(f"te{i}", te) for i, te in enumerate(parts.text_encoders)]:
            monkeypatch.setattr(module, "to", self.recorder(name, module), raising=False)

    def recorder(self, name: str, module: torch.nn.Module):
        def to(device, *args, **kwargs):
            self.calls.append((name, torch.device(device)))
            return module
        return to


FAKE = torch.device("meta")  # stands for the CPU while the training device is this CPU


def offloading(parts, *, cache_latents=True, cache_text=True, augment=Augment()) -> tuple[BatchEncoder, list[str]]:
    notices: list[str] = []
    enc = BatchEncoder(parts, CPU, torch.float32, cache_latents, cache_text, seed=0, augment=augment, offload=True,
                       on_notice=notices.append)
    enc.offload_device = FAKE
    return enc, notices


def test_full_caches_move_the_encoders_off(tmp_path: Path, parts, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = build_dataset(config(tmp_path, images(tmp_path / "i")).data, 2, 0).examples
    moves = Moves(parts, monkeypatch)
    enc, notices = offloading(parts)
    enc.prefill(examples, 2)
    assert moves.calls == [("vae", FAKE), ("te0", FAKE)]
    expected = module_bytes(parts.vae) + module_bytes(parts.text_encoders[0])
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()  # the memory those tensors hold
                for m in (parts.vae, parts.text_encoders[0]) for t in (*m.parameters(), *m.buffers())}
    assert expected == sum(storages.values()) > 0
    assert len(notices) == 1 and f"{expected / 2**20:.0f} MiB" in notices[0]
    moves.calls.clear()
    with enc.encoders_on_device():  # a sample render
        assert moves.calls == [("vae", CPU), ("te0", CPU)]
    assert moves.calls[2:] == [("vae", FAKE), ("te0", FAKE)]
    moves.calls.clear()
    enc.image_latents([examples[0].mirrored()])  # not cached: the VAE comes back for it, and stays
    enc.text_conditioning(["a caption never cached"])
    assert moves.calls == [("vae", CPU), ("te0", CPU)] and enc.offloaded == []


def test_what_is_still_needed_stays(tmp_path: Path, parts, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = build_dataset(config(tmp_path, images(tmp_path / "i")).data, 2, 0).examples
    moves = Moves(parts, monkeypatch)
    enc, _ = offloading(parts, augment=Augment(color=True))  # augmented uses: the VAE encodes every step
    enc.prefill(examples, 2)
    enc, _ = offloading(parts, cache_latents=False, cache_text=False)
    enc.prefill(examples, 2)
    assert moves.calls == [("te0", FAKE)]
    moves.calls.clear()
    lora = torch.nn.Parameter(torch.zeros(1))  # a trained text encoder (train_text_encoder) keeps its place
    parts.text_encoders[0].register_parameter("trained_here", lora)
    try:
        enc, _ = offloading(parts, cache_latents=False)
        enc.prefill(examples, 2)
    finally:
        del parts.text_encoders[0].trained_here
    enc = BatchEncoder(parts, CPU, torch.float32, True, True, seed=0)  # offload off: nothing moves
    enc.offload_device = FAKE
    enc.prefill(examples, 2)
    with enc.encoders_on_device():
        pass
    assert moves.calls == []
