"""Iterations per second of iLECO training (prompts only: no images, no VAE), through the whole engine.

Run by hand: `.venv/bin/python benchmarks/ileco.py [model] [resolution] [steps] [batch]` (default tiny-sd1, 64 px,
30 steps, batch 2, CPU or the first GPU). Measures the default objective (guidance_scale 0: one frozen and one
trained UNet forward per step) and LECO's erase term (guidance_scale 1: the frozen forward over three prompts).
Prints one line per setting; nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from lorakit import api  # noqa: E402
from lorakit.config.loader import Layer, resolve  # noqa: E402
from common import StepClock, positional  # noqa: E402

WARMUP = 3  # steps left out of the median (allocations, first kernels)


def iterations_per_second(model: str, resolution: int, steps: int, batch: int, guidance: float) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg = resolve([Layer("bench", {
            "model": {"pretrained_model_name_or_path": model},
            "mode": {"type": "ileco", "original_prompt": "a cat", "target_prompt": "a dog",
                     "guidance_scale": guidance},
            "network": {"network_dim": 4, "network_alpha": 8},
            "data": {"resolution": resolution},
            "train": {"max_train_steps": steps, "train_batch_size": batch, "learning_rate": 5e-4,
                      "min_snr_gamma": 5.0, "log_every_n_steps": 10_000,
                      "mixed_precision": "bf16" if torch.cuda.is_available() else "no"},
            "output": {"output_dir": out},
        })])
        clock = StepClock()
        api.train(cfg, [clock])
    return 1.0 / statistics.median(np.diff(clock.times[WARMUP:]))


def main() -> None:
    model, resolution, steps, batch = positional("tiny-sd1", 64, 30, 2)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"ileco, {model}, {resolution} px, batch {batch}, rank 4, {steps} steps, {device}")
    for guidance in (0.0, 1.0):
        rate = iterations_per_second(model, resolution, steps, batch, guidance)
        print(f"guidance_scale {guidance:g}: {rate:7.2f} it/s ({1000 / rate:8.1f} ms/step)")


if __name__ == "__main__":
    main()
