"""Learning-rate schedules as sd-scripts' `get_scheduler_fix` (library/train_util.py) builds them: diffusers'
schedule functions with linear warm-up, Adafactor's own relative step, or any scheduler class by name; and 'step',
TrainTrain's step rules (diffusers' piecewise_constant) with lorakit's warm-up."""

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
                           scheduler_type=train.lr_scheduler_type, initial_lr=train.learning_rate,
                           step_rules=train.lr_step_rules)


def build_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int, cycles: int,
                    args: list[str] | None = None, *, power: float = 1.0, scheduler_type: str | None = None,
                    initial_lr: float = 0.0, step_rules: str | None = None):
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

    if name == "step":
        return step_rules_scheduler(optimizer, step_rules, warmup, kwargs)

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


def parse_step_rules(text: str) -> tuple[list[tuple[int, float]], float]:
    """TrainTrain's step rules 'm1:s1,m2:s2,...,m_last' → ([(s1, m1), ...] sorted by step, m_last).

    The syntax and meaning of diffusers' get_piecewise_constant_schedule, which TrainTrain's load_lr_scheduler
    passes train_lr_step_rules to: the multiplier is m_i before absolute step s_i (the smallest s_i above the
    step), m_last from the largest s_i on; a step listed twice keeps its last multiplier. ValueError says what is
    wrong with the text.
    """
    items = [item.strip() for item in str(text).split(",")]
    if not items[-1]:
        raise ValueError("ends without the final multiplier: write e.g. '1:100,0.5:200,0.1'")
    rules: dict[int, float] = {}
    for item in items[:-1]:
        multiplier, sep, step = item.partition(":")
        if not sep:
            raise ValueError(f"'{item}' is not multiplier:step (e.g. '0.5:200'); only the last item has no step")
        try:
            rules[int(step)] = float(multiplier)
        except ValueError:
            raise ValueError(f"'{item}': the multiplier must be a number and the step a whole number") from None
    try:
        last = float(items[-1])
    except ValueError:
        raise ValueError(f"the last item '{items[-1]}' must be a multiplier alone (a number)") from None
    negative = [m for m in [*rules.values(), last] if m < 0]
    if negative:
        raise ValueError(f"multiplier {negative[0]} is negative; multipliers scale the learning rate (1 = as set)")
    return sorted(rules.items()), last


def step_multiplier(rules: list[tuple[int, float]], last: float, step: int) -> float:
    """The rules' multiplier at `step` (0-based): that of the first rule whose step is above it, else `last`."""
    return next((multiplier for boundary, multiplier in rules if step < boundary), last)


def step_rules_scheduler(optimizer: torch.optim.Optimizer, step_rules: str | None, warmup: int, kwargs: dict):
    """'step': the rules' piecewise-constant multiplier, scaled by step / warmup during the warm-up (lorakit's
    choice: diffusers' piecewise_constant, and so TrainTrain, has no warm-up)."""
    from torch.optim.lr_scheduler import LambdaLR

    if kwargs:
        raise ConfigError([f"train.lr_scheduler_args: lr_scheduler = 'step' takes no arguments ({', '.join(kwargs)})"
                           "; its rules are train.lr_step_rules"])
    if not step_rules:
        raise ConfigError(["train.lr_scheduler: 'step' needs train.lr_step_rules, e.g. '1:100,0.5:200,0.1'"])
    try:
        rules, last = parse_step_rules(step_rules)
    except ValueError as exc:
        raise ConfigError([f"train.lr_step_rules = {step_rules!r}: {exc}"]) from None

    def multiplier(step: int) -> float:
        ramp = step / warmup if step < warmup else 1.0
        return ramp * step_multiplier(rules, last, step)

    return LambdaLR(optimizer, multiplier)
