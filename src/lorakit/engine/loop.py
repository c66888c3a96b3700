"""The training loop. It reads like a page: batches → loss → backward → step; events out, commands in.

A step whose loss or gradients are not finite is skipped (no update); a step that runs out of GPU memory is
retried once with its batches split in two. Both, and a stop request, end the loop with a reason the run acts on
(a checkpoint, an exit status). `LoopState` is everything the loop needs to continue where a checkpoint left it.
"""

from __future__ import annotations

import gc
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from accelerate import Accelerator

from ..data.example import BatchSampler
from .distributed import Shard, reduce_step
from .events import Callback, Commands, StepEvent
from .faults import FaultInjector
from .mode import Task

DONE, STOPPED, NONFINITE, OUT_OF_MEMORY = "done", "stopped", "nonfinite", "out_of_memory"


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
    max_nonfinite: int = 5  # NaN/inf steps in a row before the loop ends; 0 = not checked
    oom_split_retry: bool = True
    shard: Shard = field(default_factory=Shard)  # several processes: this one's rows of each batch


@dataclass
class Position:
    """Where the data stands: the epoch and how many of its batches were used."""

    epoch: int = 1
    batch: int = 0


@dataclass
class LoopState:
    """The loop's progress within a stage; a checkpoint saves it and a resumed loop starts from it."""

    step: int = 0  # optimizer steps done (skipped NaN steps included)
    position: Position = field(default_factory=Position)
    nonfinite_in_row: int = 0
    nonfinite_total: int = 0
    last_batch: list[Any] = field(default_factory=list)  # the last step's examples (named when it fails)
    problem: str = ""  # why the loop ended early (out of memory, NaN), for the run's message


class Batches:
    """The sampler's batches epoch after epoch, from a position (a resumed run continues mid-epoch); a sampler is
    deterministic per epoch, so the position is all a checkpoint needs."""

    def __init__(self, sampler: BatchSampler, position: Position) -> None:
        self.sampler, self.position = sampler, position
        self._epoch, self._batches = 0, []

    def next(self) -> tuple[int, list[Any], bool]:
        """(epoch, batch, last batch of the epoch)."""
        p = self.position
        if self._epoch != p.epoch:
            self._epoch, self._batches = p.epoch, list(self.sampler.batches(p.epoch))
        batch, epoch = self._batches[p.batch], p.epoch
        p.batch += 1
        ended = p.batch == len(self._batches)
        if ended:
            p.epoch, p.batch = p.epoch + 1, 0
        return epoch, batch, ended


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory error (CUDA, XPU), or the MPS backend's, which is a plain RuntimeError."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_memory() -> None:
    """Return what a failed step held to the allocator (its tensors are gone once the exception is)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if torch.backends.mps.is_available():
        torch.mps.empty_cache()


def halves(batch: list[Any], parts: int) -> list[list[Any]]:
    """The batch cut into `parts` nearly equal pieces (empty pieces dropped)."""
    size = -(-len(batch) // parts)
    return [batch[i : i + size] for i in range(0, len(batch), size)]


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
    state: LoopState | None = None,
    faults: FaultInjector | None = None,
    generators: tuple[torch.Generator, ...] = (),
) -> tuple[LoopState, str]:
    """Run optimizer steps until done, asked to stop, or failed; returns the state and why it ended (DONE,
    STOPPED, NONFINITE, OUT_OF_MEMORY). `after_step(step, epoch, epoch ended)` runs after each step; `generators`
    (besides `gen`) draw during a step too (the encoder's latent samples): a failed step rolls them back."""
    state = state or LoopState()
    faults = faults or FaultInjector(None)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    batches = Batches(task.sampler, state.position)
    running, counted = torch.zeros((), device=accelerator.device), 0
    # a fused optimizer skips a NaN step on the device: then the guard reads its counts only on logging steps
    guard = DeviceGuard(optimizer, accelerator.device) \
        if settings.max_nonfinite and accelerator.scaler is None and skips_on_device(optimizer) else None
    started, done_here = time.perf_counter(), 0
    total = settings.run_total or settings.total_steps
    text_frozen = False
    task.train(True)
    shared = settings.shard.world > 1  # several processes stop together, on the decision the all-reduce shares
    agreed_stop = False
    while state.step < settings.total_steps and not (agreed_stop if shared else commands.stop):
        if settings.text_encoder_stop is not None and state.step >= settings.text_encoder_stop and not text_frozen:
            task.freeze_text_encoders()
            text_frozen = True
        run_step = settings.step_offset + state.step + 1
        start, rng = Position(**vars(state.position)), _rng_now((gen, *generators))
        window, epoch, epoch_ended = [], state.position.epoch, False
        for _ in range(settings.accumulation):  # an epoch's last window may be shorter, as in kohya's loop
            epoch, batch, epoch_ended = batches.next()
            window.append(batch)
            if epoch_ended:
                break
        state.last_batch = [item for batch in window for item in batch]
        lr = scheduler.get_last_lr()[0]  # the rate this step uses
        loss, problem = _accumulate(task, window, gen, accelerator, settings, faults, run_step, 1)
        if problem and settings.oom_split_retry and max(map(len, window)) > 1:
            optimizer.zero_grad(set_to_none=True)
            free_memory()  # here, not in the except block: the traceback no longer holds the step's tensors
            events.on_warning(f"step {run_step}: {problem}; retrying it with each batch split in two")
            _rng_restore(rng)  # the retry draws from where the step began
            loss, problem = _accumulate(task, window, gen, accelerator, settings, faults, run_step, 2)
        if problem:
            optimizer.zero_grad(set_to_none=True)
            free_memory()  # the step never happened: data position and random draws as before it
            state.position.epoch, state.position.batch = start.epoch, start.batch
            _rng_restore(rng)
            state.problem = f"step {run_step}: {problem}"
            task.train(False)
            return state, OUT_OF_MEMORY
        if shared:  # every process: the global batch's gradients and loss, one stop decision
            loss, agreed_stop = reduce_step(params, loss, commands.stop)
            commands.stop = commands.stop or agreed_stop
        faults.after_backward(run_step)
        norm = accelerator.clip_grad_norm_(params, settings.max_grad_norm) if settings.max_grad_norm else None
        if guard is not None:
            good = guard.step(_finite_flag(loss, norm, params, accelerator))
            optimizer.step()  # no update where the flag says NaN (the step count restored too)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += torch.where(good, loss, torch.zeros_like(loss))
            state.step, done_here = state.step + 1, done_here + 1
            log_now = state.step % settings.log_every == 0 or state.step == settings.total_steps
            loss_value = None
            if log_now:  # the only host sync of a step, and only on logging steps
                mean, in_row, longest, skipped = guard.read(running)
                running = torch.zeros_like(running)
                loss_value = mean
                state.nonfinite_total += skipped  # a streak that ended before this read still counts:
                state.nonfinite_in_row = max(in_row, longest) if longest >= settings.max_nonfinite else in_row
                if skipped:
                    events.on_warning(f"steps {run_step - settings.log_every + 1}–{run_step}: {skipped} step(s) had a "
                                      "NaN/inf loss or gradients and were skipped, weights unchanged "
                                      f"({in_row} in a row now; the run stops at {settings.max_nonfinite})")
            rate = done_here / max(time.perf_counter() - started, 1e-9)
            events.on_step(StepEvent(settings.step_offset + state.step, total, epoch, loss_value, lr, rate))
            if _too_many_nonfinite(state, settings, run_step, lr):
                task.train(False)
                return state, NONFINITE
            after_step(state.step, epoch, epoch_ended)
            continue
        if settings.max_nonfinite and not _finite(loss, norm, params, accelerator):
            _skip_update(optimizer, scheduler, accelerator, clipped=norm is not None)
            state.step, state.nonfinite_in_row = state.step + 1, state.nonfinite_in_row + 1
            state.nonfinite_total += 1
            events.on_warning(f"step {run_step}: the loss or the gradients are NaN/inf; step skipped, weights "
                              f"unchanged ({state.nonfinite_in_row} in a row; the run stops at "
                              f"{settings.max_nonfinite}); batch: {describe_batch(state.last_batch)}")
            events.on_step(StepEvent(settings.step_offset + state.step, total, epoch, None, lr,
                                     done_here / max(time.perf_counter() - started, 1e-9)))
            if _too_many_nonfinite(state, settings, run_step, lr):
                task.train(False)
                return state, NONFINITE
            after_step(state.step, epoch, epoch_ended)
            continue
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss
        state.step, state.nonfinite_in_row, counted, done_here = state.step + 1, 0, counted + 1, done_here + 1
        log_now = state.step % settings.log_every == 0 or state.step == settings.total_steps
        loss_value = None
        if log_now and counted:  # the only host sync of a step, and only on logging steps
            loss_value, running, counted = running.item() / counted, torch.zeros_like(running), 0
        rate = done_here / max(time.perf_counter() - started, 1e-9)
        events.on_step(StepEvent(settings.step_offset + state.step, total, epoch, loss_value, lr, rate))
        after_step(state.step, epoch, epoch_ended)
    task.train(False)
    stopped = agreed_stop if shared else commands.stop
    return state, STOPPED if stopped and state.step < settings.total_steps else DONE


def _accumulate(task: Task, window: list[list[Any]], gen: torch.Generator, accelerator: Accelerator,
                settings: LoopSettings, faults: FaultInjector, run_step: int, parts: int,
                ) -> tuple[torch.Tensor, str]:
    """Forward and backward every batch of the window (each cut into `parts` pieces weighted by their share);
    returns the summed loss (on the device) and "", or, out of memory, what happened (the caller frees memory)."""
    total = torch.zeros((), device=accelerator.device)
    shard = settings.shard
    try:
        for batch in window:
            if shard.world > 1:  # this process's rows; the random draws are the whole batch's (distributed.py)
                rows = shard.rows(len(batch))
                with accelerator.autocast():
                    loss = task.loss(batch, gen, rows)
                if loss is not None:  # None: no rows for this process in this batch (it still drew)
                    loss = loss * ((rows.stop - rows.start) / len(batch)) / settings.accumulation
                    accelerator.backward(loss)
                    total += loss.detach()
                continue
            for piece in halves(batch, parts):
                with accelerator.autocast():
                    loss = task.loss(piece, gen) / settings.accumulation
                    faults.forward(run_step, parts)  # after the step's random draws, as a real one would be
                    if parts > 1:
                        loss = loss * (len(piece) / len(batch))
                    loss = faults.loss(run_step, loss)
                accelerator.backward(loss)
                total += loss.detach()
        return total, ""
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
        message = f"out of GPU memory ({str(exc).splitlines()[0][:300]})"
    return total, message


def _skip_update(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                 accelerator: Accelerator, clipped: bool) -> None:
    """A NaN/inf step: no update, but fp16's scaler sees it (it lowers its scale) and the schedule advances."""
    if accelerator.scaler is not None:
        if not clipped:  # clipping unscaled already; update() needs the inf checks of an unscale
            accelerator.unscale_gradients()
        accelerator.scaler.update()
    optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": skipping is the point
        warnings.simplefilter("ignore", UserWarning)
        scheduler.step()


def _too_many_nonfinite(state: LoopState, settings: LoopSettings, run_step: int, lr: float) -> bool:
    """Whether max_nonfinite NaN/inf steps in a row were reached; if so, the run's message is in state.problem."""
    if state.nonfinite_in_row < settings.max_nonfinite:
        return False
    state.problem = (f"{state.nonfinite_in_row} steps in a row had a NaN/inf loss or gradients (last: step {run_step}, "
                     f"learning rate {lr:.3g}, batch: {describe_batch(state.last_batch)})")
    return True


def _finite(loss: torch.Tensor, norm: torch.Tensor | None, params: list[torch.nn.Parameter],
            accelerator: Accelerator) -> bool:
    """The loss and the gradients are finite (one host sync)."""
    return bool(_finite_flag(loss, norm, params, accelerator))


def _finite_flag(loss: torch.Tensor, norm: torch.Tensor | None, params: list[torch.nn.Parameter],
                 accelerator: Accelerator) -> torch.Tensor:
    """On the device: whether the loss and the gradients are finite. With fp16's gradient scaler, inf gradients
    are the scaler's business (it skips those steps and lowers its scale): only the loss is checked."""
    ok = torch.isfinite(loss)
    if accelerator.scaler is None:
        if norm is None:
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros((), device=loss.device)
        ok = ok & torch.isfinite(norm.to(loss.device))
    return ok


def skips_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """A fused torch optimizer (AdamW on CUDA) takes `found_inf`, as the gradient scaler sets it, and skips the
    update where it is 1 inside its kernel, step count included: a NaN step then needs no host sync to be skipped."""
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
    return bool(getattr(inner, "_step_supports_amp_scaling", False)) and \
        all(group.get("fused") for group in inner.param_groups)


class DeviceGuard:
    """The NaN guard without a per-step host sync (fused optimizers): each step tells the optimizer whether to
    skip (`found_inf`) and counts on the device; `read` brings the counts back on logging steps."""

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        self.inner = getattr(optimizer, "optimizer", optimizer)
        self.in_row = torch.zeros((), device=device)
        self.skipped = torch.zeros((), device=device)
        self.good = torch.zeros((), device=device)  # finite steps since the last read (the mean loss's count)
        self.longest = torch.zeros((), device=device)  # the longest run of NaN steps since the last read

    def step(self, finite: torch.Tensor) -> torch.Tensor:
        """Before optimizer.step(): set its skip flag; returns `finite` (the step counts toward the loss)."""
        bad = (~finite).float()
        self.inner.found_inf = bad
        self.in_row = (self.in_row + 1) * bad
        self.longest = torch.maximum(self.longest, self.in_row)
        self.skipped += bad
        self.good += 1 - bad
        return finite

    def read(self, running: torch.Tensor) -> tuple[float | None, int, int, int]:
        """(mean finite loss since the last read or None, NaN steps in a row now, the longest such run since the
        last read, NaN steps since the last read); one host sync."""
        values = torch.stack([running.float(), self.good, self.in_row, self.longest, self.skipped]).tolist()
        loss, good, in_row, longest, skipped = values
        for counter in (self.skipped, self.good, self.longest):
            counter.zero_()
        return (loss / good if good else None), int(in_row), int(longest), int(skipped)


def describe_batch(items: list[Any], shown: int = 4) -> str:
    """The batch's image files (or prompt pairs): what a user checks when a step fails."""
    from ..errors import some_of

    names = list(dict.fromkeys(str(getattr(i, "image", None) or i) for i in items))
    return some_of(names, shown)


RngStates = tuple[list[tuple[torch.Generator, torch.Tensor]], torch.Tensor, list[torch.Tensor], torch.Tensor | None]


def _rng_now(generators: tuple[torch.Generator, ...]) -> RngStates:
    """The generators' and torch's global states (dropout: the CPU's, every CUDA device's, Apple MPS's) before a
    step, to undo a step that failed. CUDA's only once initialised: asking would otherwise start it."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    mps = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None
    return [(g, g.get_state()) for g in generators], torch.get_rng_state(), cuda, mps


def _rng_restore(states: RngStates) -> None:
    generators, cpu, cuda, mps = states
    for g, state in generators:
        g.set_state(state)
    torch.set_rng_state(cpu)
    if cuda:
        torch.cuda.set_rng_state_all(cuda)
    if mps is not None:
        torch.mps.set_rng_state(mps)
