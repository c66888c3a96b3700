"""The training loop. It reads like a page: batch → loss → backward → step; events out, commands in."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from accelerate import Accelerator

from ..data.example import BatchSampler, Example
from ..modes.base import Mode
from .events import Callback, Commands, StepEvent


@dataclass
class LoopSettings:
    """Numbers the loop needs; all derived from the config by the trainer."""

    total_steps: int
    accumulation: int = 1
    max_grad_norm: float = 0.0
    log_every: int = 1
    save_every: int | None = None
    validate_every: int | None = None
    text_encoder_stop: int | None = None


def endless_batches(sampler: BatchSampler) -> Iterator[tuple[int, list[Example], bool]]:
    """(epoch, batch, last batch of the epoch), epoch after epoch."""
    epoch = 0
    while True:
        epoch += 1
        batches = list(sampler.batches(epoch))
        for i, batch in enumerate(batches):
            yield epoch, batch, i == len(batches) - 1


def train_loop(
    mode: Mode,
    sampler: BatchSampler,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    settings: LoopSettings,
    gen: torch.Generator,
    events: Callback,
    commands: Commands,
    save: Callable[[int], None],
    validate: Callable[[int], None] | None = None,
) -> tuple[int, bool]:
    """Run optimizer steps until done or asked to stop; returns (steps done, stopped early)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    batches = endless_batches(sampler)
    running, counted = torch.zeros((), device=accelerator.device), 0
    started, step, epoch = time.perf_counter(), 0, 1
    mode.train(True)
    while step < settings.total_steps and not commands.stop:
        if step == settings.text_encoder_stop:
            mode.freeze_text_encoders()
        for _ in range(settings.accumulation):  # an epoch's last window may be shorter, as in kohya's loop
            epoch, examples, last = next(batches)
            with accelerator.autocast():
                loss = mode.loss(examples, gen) / settings.accumulation
            accelerator.backward(loss)
            running += loss.detach()
            if last:
                break
        if settings.max_grad_norm:
            accelerator.clip_grad_norm_(params, settings.max_grad_norm)
        lr = scheduler.get_last_lr()[0]  # the rate this step used
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step, counted = step + 1, counted + 1
        log_now = step % settings.log_every == 0 or step == settings.total_steps
        loss_value = None
        if log_now:  # the only host sync of a step, and only on logging steps
            loss_value, running, counted = running.item() / counted, torch.zeros_like(running), 0
        rate = step / max(time.perf_counter() - started, 1e-9)
        events.on_step(StepEvent(step, settings.total_steps, epoch, loss_value, lr, rate))
        if validate and settings.validate_every and step % settings.validate_every == 0:
            mode.train(False)
            validate(step)
            mode.train(True)
        if commands.save or (settings.save_every and step % settings.save_every == 0 and step < settings.total_steps):
            commands.save = False
            save(step)
    mode.train(False)
    return step, commands.stop
