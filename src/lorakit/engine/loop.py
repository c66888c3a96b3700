"""The training loop. It reads like a page: batch → loss → backward → step; events out, commands in."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from accelerate import Accelerator

from ..data.example import BatchSampler
from .events import Callback, Commands, StepEvent
from .mode import Task


@dataclass
class LoopSettings:
    """Numbers the loop needs; all derived from the stage's config by the run."""

    total_steps: int
    accumulation: int = 1
    max_grad_norm: float = 0.0
    log_every: int = 1
    text_encoder_stop: int | None = None
    step_offset: int = 0  # steps of earlier stages: events count the run's steps
    run_total: int | None = None  # the run's steps over all stages; None = total_steps


def endless_batches(sampler: BatchSampler) -> Iterator[tuple[int, list[Any], bool]]:
    """(epoch, batch, last batch of the epoch), epoch after epoch."""
    epoch = 0
    while True:
        epoch += 1
        batches = list(sampler.batches(epoch))
        for i, batch in enumerate(batches):
            yield epoch, batch, i == len(batches) - 1


def train_loop(
    task: Task,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    accelerator: Accelerator,
    settings: LoopSettings,
    gen: torch.Generator,
    events: Callback,
    commands: Commands,
    after_step: Callable[[int, int, bool], None],
) -> tuple[int, bool]:
    """Run optimizer steps until done or asked to stop; returns (steps done, stopped early).

    `after_step(step, epoch, epoch ended)` runs after each step (validation, saves, samples)."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    batches = endless_batches(task.sampler)
    running, counted = torch.zeros((), device=accelerator.device), 0
    started, step, epoch = time.perf_counter(), 0, 1
    total = settings.run_total or settings.total_steps
    task.train(True)
    while step < settings.total_steps and not commands.stop:
        if step == settings.text_encoder_stop:
            task.freeze_text_encoders()
        epoch_ended = False
        for _ in range(settings.accumulation):  # an epoch's last window may be shorter, as in kohya's loop
            epoch, batch, epoch_ended = next(batches)
            with accelerator.autocast():
                loss = task.loss(batch, gen) / settings.accumulation
            accelerator.backward(loss)
            running += loss.detach()
            if epoch_ended:
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
        events.on_step(StepEvent(settings.step_offset + step, total, epoch, loss_value, lr, rate))
        after_step(step, epoch, epoch_ended)
    task.train(False)
    return step, commands.stop
