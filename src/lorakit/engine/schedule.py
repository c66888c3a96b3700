"""Learning-rate schedules as sd-scripts' `get_scheduler_fix` (library/train_util.py) builds them: diffusers'
schedule functions with linear warm-up, Adafactor's own relative step, or any scheduler class by name."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError
from .optim import parse_args

if TYPE_CHECKING:
    import torch

    from ..config.schema import TrainSection


def scheduler_for(train: TrainSection, optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """The schedule a train section asks for, stepped once per optimizer step over `total` steps."""
    return build_scheduler(train.lr_scheduler, optimizer, warmup, total, train.lr_scheduler_num_cycles,
                           train.lr_scheduler_args, power=train.lr_scheduler_power,
                           scheduler_type=train.lr_scheduler_type, initial_lr=train.learning_rate)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int, cycles: int,
                    args: list[str] | None = None, *, power: float = 1.0, scheduler_type: str | None = None,
                    initial_lr: float = 0.0):
    """A scheduler; `args` are `key=value` extras passed to the schedule function or class.

    `scheduler_type` (a torch.optim.lr_scheduler class, or module.Class) replaces `name` and gets only `args`, as in
    sd-scripts, which refuses a warm-up there. 'adafactor' is transformers' AdafactorSchedule: it reports the step
    size Adafactor computes itself, `initial_lr` until the first step.
    """
    kwargs = parse_args(args or [], "train.lr_scheduler_args")
    if scheduler_type or name == "adafactor":
        if warmup:
            what = f"lr_scheduler_type = '{scheduler_type}'" if scheduler_type else "lr_scheduler = 'adafactor'"
            raise ConfigError([f"train.lr_warmup_steps: {warmup} warm-up steps, but train.{what} has no warm-up "
                               "(sd-scripts refuses one); set lr_warmup_steps = 0 and no lr_warmup_ratio"])
    if scheduler_type:
        from ..config.optimizer_rules import scheduler_class

        cls, problem = scheduler_class(scheduler_type)
        if cls is None:
            raise ConfigError([f"train.lr_scheduler_type: {problem}"])
        return cls(optimizer, **kwargs)
    if name == "adafactor":
        from transformers.optimization import Adafactor, AdafactorSchedule

        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
        if not (isinstance(inner, Adafactor) and inner.defaults["relative_step"]):
            raise ConfigError(["train.lr_scheduler: 'adafactor' needs optimizer_type = 'Adafactor' with "
                               "'relative_step=True' in optimizer_args"])
        return AdafactorSchedule(optimizer, initial_lr)

    from diffusers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType

    if name == "constant" and warmup:  # lorakit's choice: sd-scripts refuses a warm-up with 'constant'
        name = "constant_with_warmup"
    schedule = TYPE_TO_SCHEDULER_FUNCTION[SchedulerType(name)]
    if name == "constant":
        return schedule(optimizer, **kwargs)
    if name == "constant_with_warmup":
        return schedule(optimizer, num_warmup_steps=warmup, **kwargs)
    # as get_scheduler_fix: cycles only for restarts (plain cosine keeps its half wave), power only for polynomial
    extra = {"num_cycles": cycles} if name == "cosine_with_restarts" else {"power": power} if name == "polynomial" \
        else {}
    return schedule(optimizer, num_warmup_steps=warmup, num_training_steps=total, **extra, **kwargs)
