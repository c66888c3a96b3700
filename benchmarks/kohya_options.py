"""What sd-scripts' options cost per training step, and how long `config import` takes.

Trains the same small run once per option (everything else equal) and prints seconds per step and the ratio to
the run without options; then imports every real kohya config in ../shared/testdata/kohya-configs (when present)
and prints the time per file. Run: `python benchmarks/kohya_options.py [model] [resolution] [steps]`, e.g.
`python benchmarks/kohya_options.py random-sd15 512 30` on a GPU machine (default: tiny-sd1 64 24).
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
from lorakit.demo import write_sample_images  # noqa: E402

from common import StepClock, positional  # noqa: E402

OPTIONS: dict[str, dict] = {  # section → values, added to the base run
    "none": {},
    "scale_weight_norms 1.0": {"train": {"scale_weight_norms": 1.0}},
    "multires noise 6": {"train": {"multires_noise_iterations": 6}},
    "noise offset + adaptive + ip_noise_gamma": {"train": {"noise_offset": 0.05, "adaptive_noise_scale": 0.005,
                                                          "ip_noise_gamma": 0.1}},
    "debiased + min_snr 5": {"train": {"debiased_estimation_loss": True, "min_snr_gamma": 5.0}},
    "max_token_length 225": {"train": {"max_token_length": 225}},
    "clip_skip 2 + text encoder": {"train": {"clip_skip": 2}, "network": {"train_text_encoder": True}},
    "random_flip": {"data": {"random_flip": True}},
    "masked loss (alpha)": {"train": {"masked_loss": True}, "data": {"alpha_mask": True}},
    "Prodigy": {"train": {"optimizer_type": "Prodigy", "learning_rate": 1.0}},
    "Lion": {"train": {"optimizer_type": "Lion"}},
}


def seconds_per_step(model: str, resolution: int, steps: int, data: Path, out: Path, extra: dict) -> float:
    values = {
        "model": {"pretrained_model_name_or_path": model},
        "network": {"network_dim": 8, "network_alpha": 8},
        "data": {"train_data_dir": str(data), "resolution": resolution},
        "train": {"max_train_steps": steps, "learning_rate": 1e-4, "log_every_n_steps": 10_000,
                  "mixed_precision": "bf16" if torch.cuda.is_available() else "no"},
        "output": {"output_dir": str(out)},
        "checkpoint": {"every_n_steps": 0, "at_end": False},
    }
    for section, more in extra.items():
        values[section] = {**values.get(section, {}), **more}
    clock = StepClock()
    api.train(resolve([Layer("bench", values)]), [clock])
    return statistics.median(np.diff(clock.times[steps // 3:]))


def import_times() -> list[tuple[str, float]]:
    from lorakit.config.importers import import_file

    folder = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "kohya-configs"
    out = []
    for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*.toml")):
        started = time.perf_counter()
        try:
            import_file(path)
        except Exception:  # a dataset TOML alone is refused: its time counts all the same
            pass
        out.append((path.name, time.perf_counter() - started))
    return out


def main() -> None:
    model, resolution, steps = positional("tiny-sd1", 64, 24)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_sample_images(data, count=8, size=resolution)
        base = None
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"{model} at {resolution}px, {steps} steps, batch 1, rank 8 ({device})")
        seconds_per_step(model, resolution, steps, data, Path(tmp) / "runs", {})  # warm-up: caches, allocator
        for name, extra in OPTIONS.items():
            t = seconds_per_step(model, resolution, steps, data, Path(tmp) / "runs", extra)
            base = base or t
            print(f"  {name:42s} {t * 1000:8.1f} ms/step  ×{t / base:.2f}")
    times = import_times()
    if times:
        print(f"config import: {len(times)} files, median {statistics.median(t for _, t in times) * 1000:.1f} ms, "
              f"slowest {max(times, key=lambda x: x[1])[0]} {max(t for _, t in times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
