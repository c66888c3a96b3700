"""Learning-rate schedules (diffusers' implementations), all with linear warm-up."""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int, cycles: int):
    """A LambdaLR-style scheduler stepped once per optimizer step."""
    if name == "constant" and warmup:
        name = "constant_with_warmup"
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup, num_training_steps=total, num_cycles=cycles
    )
