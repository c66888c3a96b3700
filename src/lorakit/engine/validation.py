"""Loss on a fixed held-out set: the same noise and timesteps every time, so values are comparable across steps."""

from __future__ import annotations

import torch

from ..data.example import Example
from .encode import BatchEncoder
from .mode import Task


@torch.no_grad()
def held_out_loss(task: Task, encoder: BatchEncoder, examples: list[Example], batch_size: int,
                  seed: int = 1234) -> float:
    """Mean loss over `examples` with fixed noise, timesteps and latent samples (deterministic for given weights).

    The encoder's own generator is set aside and restored, so validating never changes what training sees.
    """
    if not examples:
        raise ValueError("held_out_loss needs at least one example")
    gen = torch.Generator(device=encoder.device).manual_seed(seed)
    saved = encoder.gen.get_state()
    encoder.gen.manual_seed(seed)
    try:
        return _mean_loss(task, examples, batch_size, gen)
    finally:
        encoder.gen.set_state(saved)


def _mean_loss(task: Task, examples: list[Example], batch_size: int, gen: torch.Generator) -> float:
    by_size: dict[tuple[int, int], list[Example]] = {}
    for e in examples:
        by_size.setdefault(e.size, []).append(e)
    total, n = 0.0, 0
    for group in by_size.values():
        for i in range(0, len(group), batch_size):
            batch = group[i : i + batch_size]
            total += task.loss(batch, gen).item() * len(batch)
            n += len(batch)
    return total / n
