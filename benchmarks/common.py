"""What the benchmark scripts share: step and window clocks, peak memory, the device's peak FLOPS, positional
arguments with defaults, a Difference image pair.

The scripts run as `.venv/bin/python benchmarks/<name>.py`, so this folder is on their import path.
"""

from __future__ import annotations

import gc
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lorakit.engine.events import Callback, StepEvent


class StepClock(Callback):
    """Wall-clock time at the end of every step (after the GPU finished it), and when each stage was announced."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.stages: list[float] = []

    def on_notice(self, message: str) -> None:
        if message.startswith("pass "):  # Difference's "pass 1: copy machine: N steps"
            self.stages.append(time.perf_counter())

    def on_step(self, event: StepEvent) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def synchronize(device: torch.device) -> None:
    """Wait until the device has finished the work queued so far (the CPU runs it in order: nothing to wait for)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class PeakMemory:
    """Peak CUDA memory since the last mark (torch.cuda.max_memory_allocated: what the tensors held). None on other
    devices: in one process that alternates runs, the resident set's high-water mark belongs to whichever run first
    grew the heap, not to the run being measured."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @property
    def label(self) -> str:
        return "peak CUDA memory allocated" if self.device.type == "cuda" else "n/a off CUDA"

    def begin_run(self) -> None:
        """Before a run: what earlier runs left freed, and the peak counter restarted."""
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def mark(self) -> int | None:
        """The peak in bytes since `begin_run` or the last mark; the counter restarts from here."""
        if self.device.type != "cuda":
            return None
        peak = torch.cuda.max_memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return peak


class WindowClock(Callback):
    """Times steps warmup+1 … last of a run: one synchronize when step `warmup` has been announced and one at the
    last step, none in between (a per-step synchronize would add host waits a real run does not pay). Memory is
    marked at both ends, so `window_peak` is the peak of the timed steps alone."""

    def __init__(self, warmup: int, device: torch.device, memory: PeakMemory) -> None:
        self.warmup, self.device, self.memory = warmup, device, memory
        self.started: float | None = None
        self.seconds: float | None = None
        self.steps = 0
        self.peaks: list[int | None] = []
        self.window_peak: int | None = None

    def start(self) -> None:
        synchronize(self.device)
        self.peaks.append(self.memory.mark())  # loading, caching, warm-up steps
        self.started = time.perf_counter()

    def stop(self, steps: int) -> None:
        synchronize(self.device)
        assert self.started is not None, "the window was never started (steps <= warmup?)"
        self.seconds, self.steps = time.perf_counter() - self.started, steps
        self.window_peak = self.memory.mark()
        self.peaks.append(self.window_peak)

    def on_step(self, event: StepEvent) -> None:
        if event.step == self.warmup:
            self.start()
        elif event.step == event.total:
            self.stop(event.total - self.warmup)


def peak_tflops(precision: str, allow_tf32: bool = True) -> tuple[float | None, str]:
    """This machine's dense peak TFLOP/s for the precision the steps compute in (bf16/fp16; fp32 runs use TF32
    when allowed), from lorakit's GPU table (`lorakit.engine.estimate`, the one `lorakit estimate` uses), and
    where it came from; (None, why) on a CPU or a GPU the table does not know."""
    from lorakit.engine.estimate import detected_gpu

    gpu = detected_gpu()
    if gpu is None:
        return None, "no GPU in lorakit's table (pass --peak-tflops)"
    key = precision if precision in ("bf16", "fp16") else "tf32" if allow_tf32 else "fp32"
    value = gpu.tflops.get(key)
    return value, f"{gpu.name}, dense {key}" if value else f"{gpu.name} has no {key} peak in the table"


def positional(*defaults: object) -> list:
    """sys.argv[1:] with each missing argument taken from `defaults`, cast to the default's type."""
    given = sys.argv[1:]
    return [type(d)(given[i]) if i < len(given) else d for i, d in enumerate(defaults)]


def write_pair(folder: Path, size: int = 64) -> tuple[Path, Path]:
    """A two-tone picture and the same picture with a bright square: what a Difference slider should learn."""
    folder.mkdir(parents=True, exist_ok=True)
    original = np.zeros((size, size, 3), np.uint8)
    original[:, :], original[size * 5 // 8 :] = (40, 90, 160), (120, 70, 30)
    target = original.copy()
    target[size * 3 // 16 : size * 9 // 16, size * 3 // 16 : size * 9 // 16] = (250, 250, 240)
    paths = folder / "original.png", folder / "target.png"
    Image.fromarray(original).save(paths[0])
    Image.fromarray(target).save(paths[1])
    return paths
