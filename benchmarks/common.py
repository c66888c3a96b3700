"""What the benchmark scripts share: a step clock, positional arguments with defaults, a Difference image pair.

The scripts run as `.venv/bin/python benchmarks/<name>.py`, so this folder is on their import path.
"""

from __future__ import annotations

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
