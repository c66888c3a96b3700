"""Fault injection, a testing aid (`[faults]` in the config): a real out-of-memory error, a NaN loss or a SIGKILL
at a chosen step, so tests (and users checking their setup) see what a real failure does to a run."""

from __future__ import annotations

import os
import signal

import torch

from ..config.schema import FaultsSection


class FaultInjector:
    """The engine calls these hooks at the points a real failure would happen; each does nothing unless its
    `[faults]` setting names the current step (the run's step, counting from 1)."""

    def __init__(self, section: FaultsSection | None, batch_size: int = 1) -> None:
        self.s = section or FaultsSection()
        self.batch_size = batch_size

    def forward(self, step: int, attempt: int) -> None:
        """In a forward pass, after its random draws: `attempt` 1 is the step's first try, 2 its split retry."""
        heavy = self.s.oom_min_batch is None or self.batch_size >= self.s.oom_min_batch
        if step == self.s.oom_at_step and attempt <= self.s.oom_attempts and heavy:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate 20.00 MiB (lorakit fault injection: "
                                         f"faults.oom_at_step = {step}, attempt {attempt})")

    def loss(self, step: int, loss: torch.Tensor) -> torch.Tensor:
        """The loss, NaN (and so its gradients) in the steps faults.nan_at_step … + nan_steps − 1."""
        start = self.s.nan_at_step
        if start is not None and start <= step < start + self.s.nan_steps:
            return loss * float("nan")
        return loss

    def after_backward(self, step: int) -> None:
        """Mid-step, after the gradients and before the update: a power cut here loses the step."""
        if step == self.s.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def checkpoint_file(self, step: int) -> None:
        """Between the files of a checkpoint being written."""
        if step == self.s.kill_in_checkpoint:
            os.kill(os.getpid(), signal.SIGKILL)
