"""Learning-rate schedules (diffusers' implementations), all with linear warm-up."""

from __future__ import annotations

import torch
from diffusers.optimization import get_scheduler


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int, cycles: int,
                    args: list[str] | None = None):
    """A LambdaLR-style scheduler stepped once per optimizer step; `args` are `key=value` extras (e.g. power=2)."""
    from .optim import parse_args

    if name == "constant" and warmup:
        name = "constant_with_warmup"
    kwargs = {"num_cycles": cycles, **parse_args(args or [], "train.lr_scheduler_args")}
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total, **kwargs)
