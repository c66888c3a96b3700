"""Loss on a fixed held-out set: the same noise and timesteps every time, so values are comparable across steps."""

from __future__ import annotations

import torch

from ..data.example import Example
from ..modes.base import Mode


@torch.no_grad()
def held_out_loss(mode: Mode, examples: list[Example], batch_size: int, seed: int = 1234) -> float:
    """Mean loss over `examples` with a fixed generator (deterministic for given weights)."""
    if not examples:
        raise ValueError("held_out_loss needs at least one example")
    device = next(p.device for g in mode.param_groups() for p in g["params"])
    gen = torch.Generator(device=device).manual_seed(seed)
    by_size: dict[tuple[int, int], list[Example]] = {}
    for e in examples:
        by_size.setdefault(e.size, []).append(e)
    total, n = 0.0, 0
    for group in by_size.values():
        for i in range(0, len(group), batch_size):
            batch = group[i : i + batch_size]
            total += mode.loss(batch, gen).item() * len(batch)
            n += len(batch)
    return total / n
