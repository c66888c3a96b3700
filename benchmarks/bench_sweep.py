"""The cost of a bench sweep: lorakit's renderer (the base model and the LoRA loaded once, the weight changed between
images) against reloading the model and the LoRA for every weight, as a script that calls `generate` per weight
would. Reports seconds per sweep and images/s for each, in one process.

    .venv/bin/python benchmarks/bench_sweep.py                      # tiny-sd1, a LoRA trained for 3 steps
    .venv/bin/python benchmarks/bench_sweep.py random-sd15 512 20   # model, size, steps (GPU)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import positional  # benchmarks/ is on the path when run as a script

from lorakit import api
from lorakit.bench.plan import BenchPlan
from lorakit.bench.render import render_plan
from lorakit.config.loader import load_config

WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0]
SEEDS = [1, 2]


def trained_lora(folder: Path, model: str) -> Path:
    """A LoRA trained for 3 steps on two random images (the sweep's cost does not depend on what it learned)."""
    import numpy as np
    from PIL import Image

    images = folder / "img"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text("a photo", encoding="utf-8")
    run = api.train(load_config(sets=[
        f'data.train_data_dir="{images}"', f'output.output_dir="{folder / "runs"}"', "data.resolution=64",
        f"model.pretrained_model_name_or_path='{model}'", "network.network_dim=4", "train.max_train_steps=3",
        "checkpoint.every_n_steps=0", "checkpoint.at_end=false"]))
    return run.lora_path


def main() -> None:
    model, size, steps = positional("tiny-sd1", 0, 4)
    size, steps = int(size) or None, int(steps)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lora = trained_lora(folder, model)
        plan = BenchPlan(prompts=["a photo"], seeds=SEEDS, weights=WEIGHTS, steps=steps, width=size, height=size,
                         lora=str(lora), model=model)
        start = time.perf_counter()
        render_plan(plan, folder / "once")
        once = time.perf_counter() - start
        start = time.perf_counter()
        for w in WEIGHTS:  # what a script calling `generate` per weight pays: the model and the LoRA each time
            single = BenchPlan(prompts=plan.prompts, seeds=SEEDS, weights=[w], steps=steps, width=size, height=size,
                               lora=str(lora), model=model)
            render_plan(single, folder / f"reload_{w:g}")
        reload = time.perf_counter() - start
    n = len(WEIGHTS) * len(SEEDS)
    print(f"{model}, {n} images ({len(WEIGHTS)} weights × {len(SEEDS)} seeds), {steps} steps")
    print("| renderer | s per sweep | images/s |\n| --- | --- | --- |")
    print(f"| loaded once (lorakit bench) | {once:.2f} | {n / once:.2f} |")
    print(f"| reloaded per weight | {reload:.2f} | {n / reload:.2f} |")
    print(f"ratio: {reload / once:.2f}×")


if __name__ == "__main__":
    main()
