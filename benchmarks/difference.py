"""Time of each pass of a Difference run (copy machine, then the difference), through the whole engine.

Run by hand: `.venv/bin/python benchmarks/difference.py [model] [resolution] [steps] [batch]` (default tiny-sd1,
64 px, 30 steps per pass, batch 2, CPU or the first GPU; e.g. `random-sd15 512 5 1`). Two generated images of the
resolution. Prints, per pass, its wall time (from its start to its last step: the optimizer, the steps) and the
median step time; nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lorakit import api  # noqa: E402
from lorakit.config.loader import Layer, resolve  # noqa: E402
from common import StepClock, positional, write_pair  # noqa: E402


def main() -> None:
    model, resolution, steps, batch = positional("tiny-sd1", 64, 30, 2)
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
        clock = StepClock()
        began = time.perf_counter()
        api.train(cfg, [clock])
        ended = time.perf_counter()
    print(f"difference, {model}, {resolution} px, batch {batch}, rank 16 then 4, {steps} steps a pass, {device}; "
          f"whole run {ended - began:.1f} s (model load included)")
    for i, label in enumerate(("pass 1 (copy machine, rank 16)", "pass 2 (difference, rank 4)")):
        times = clock.times[i * steps : (i + 1) * steps]
        wall = times[-1] - clock.stages[i]
        step = statistics.median(np.diff(times[1:])) if len(times) > 2 else float("nan")
        print(f"{label}: {wall:7.2f} s, {step * 1000:8.1f} ms/step (median, first step left out)")


if __name__ == "__main__":
    main()
