"""Time of each pass of a Difference run (copy machine, then the difference), through the whole engine.

Run by hand: `.venv/bin/python benchmarks/difference.py [model] [resolution] [steps] [batch]` (default tiny-sd1,
64 px, 30 steps per pass, batch 2, CPU or the first GPU; e.g. `random-sd15 512 5 1`). Two generated images of the
resolution. Prints, per pass, its wall time (from its start to its last step: the optimizer, the steps) and the
median step time; nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from lorakit import api  # noqa: E402
from lorakit.config.loader import Layer, resolve  # noqa: E402
from lorakit.engine.events import Callback, StepEvent  # noqa: E402


class PassClock(Callback):
    """The time each stage was announced and each step ended."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.steps: list[float] = []

    def on_notice(self, message: str) -> None:
        if message.startswith("pass "):
            self.starts.append(time.perf_counter())

    def on_step(self, event: StepEvent) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.steps.append(time.perf_counter())


def write_pair(folder: Path, size: int) -> tuple[Path, Path]:
    """An original and the same picture with a bright square."""
    original = np.full((size, size, 3), (40, 90, 160), np.uint8)
    target = original.copy()
    target[size // 4 : size // 2, size // 4 : size // 2] = 250
    paths = folder / "original.png", folder / "target.png"
    Image.fromarray(original).save(paths[0])
    Image.fromarray(target).save(paths[1])
    return paths


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "tiny-sd1"
    resolution = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as out:
        original, target = write_pair(Path(out), resolution)
        cfg = resolve([Layer("bench", {
            "model": {"pretrained_model_name_or_path": model},
            "mode": {"type": "difference", "original_image": str(original), "target_image": str(target),
                     "second_pass": {"network_dim": 4, "network_alpha": 4}},
            "network": {"network_dim": 16, "network_alpha": 16},
            "data": {"resolution": resolution},
            "train": {"max_train_steps": steps, "train_batch_size": batch, "learning_rate": 5e-4,
                      "min_snr_gamma": 5.0, "log_every_n_steps": 10_000,
                      "mixed_precision": "bf16" if device == "cuda" else "no"},
            "output": {"output_dir": out},
        })])
        clock = PassClock()
        began = time.perf_counter()
        api.train(cfg, [clock])
        ended = time.perf_counter()
    print(f"difference, {model}, {resolution} px, batch {batch}, rank 16 then 4, {steps} steps a pass, {device}; "
          f"whole run {ended - began:.1f} s (model load included)")
    for i, label in enumerate(("pass 1 (copy machine, rank 16)", "pass 2 (difference, rank 4)")):
        times = clock.steps[i * steps : (i + 1) * steps]
        wall = times[-1] - clock.starts[i]
        step = statistics.median(np.diff(times[1:])) if len(times) > 2 else float("nan")
        print(f"{label}: {wall:7.2f} s, {step * 1000:8.1f} ms/step (median, first step left out)")


if __name__ == "__main__":
    main()
