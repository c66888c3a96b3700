"""`lorakit bench` end to end on the tiny model: a trained LoRA rendered at weights × seeds into its run folder's
bench/, with grids, metrics.csv and index.html; weight 0 is the base model's image."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli, write_images
from lorakit import api
from lorakit.config.loader import load_config


def plain_render(prompt: str, seed: int, steps: int) -> np.ndarray:
    """tiny-sd1 without any LoRA, with the bench's default sampler (euler) and guidance."""
    from lorakit.bench.plan import diffusers_scheduler
    from lorakit.config.schema import ModelSection
    from lorakit.families import load_model

    parts = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    parts.pipeline.scheduler = diffusers_scheduler("euler", "normal", dict(parts.pipeline.scheduler.config))
    out = parts.pipeline(prompt=prompt, num_inference_steps=steps, guidance_scale=7.0, width=parts.resolution,
                         height=parts.resolution, generator=torch.Generator(device="cpu").manual_seed(seed))
    return np.asarray(out.images[0])


def test_bench_of_a_trained_lora(tmp_path: Path, monkeypatch, capsys) -> None:
    images = write_images(tmp_path / "img", count=2)
    run = api.train(load_config(sets=[
        f'data.train_data_dir="{images}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        "network.network_dim=4", "train.max_train_steps=3", "train.learning_rate=5e-2",
        "checkpoint.every_n_steps=0", "checkpoint.at_end=false"]))
    code, out = run_cli(monkeypatch, capsys, "bench", "--lora", run.lora_path, "--model", "tiny-sd1",
                        "--prompt", "a photo", "--weights", "0,1", "--seeds", "1,2", "--steps", "2",
                        "--train-images", images)
    assert code == 0, out
    bench = run.run_dir / "bench"  # the run's own folder
    assert sorted(p.name for p in (bench / "images").iterdir()) == [
        "p00_s1_w0.png", "p00_s1_w1.png", "p00_s2_w0.png", "p00_s2_w1.png"]
    assert {p.name for p in bench.glob("grid_*.png")} == {"grid_prompt00.png", "grid_seed1.png", "grid_seed2.png"}
    rows = list(csv.DictReader(open(bench / "metrics.csv", encoding="utf-8")))
    assert [(int(r["seed"]), float(r["weight"])) for r in rows] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    base_rows = [r for r in rows if float(r["weight"]) == 0]
    assert all(float(r["mean_abs_diff"]) == 0 and float(r["ssim"]) == 1 for r in base_rows)
    assert all(float(r["mean_abs_diff"]) > 0 for r in rows if float(r["weight"]) == 1)  # the LoRA changes the image
    assert all(r["hist_distance"] != "" for r in rows)
    page = (bench / "index.html").read_text(encoding="utf-8")
    assert all(f'src="{g}"' in page for g in ("grid_prompt00.png", "grid_seed1.png")) and "<polyline" in page
    assert "effect" in page and "summary" in out

    # weight 0 is the base model: the same render without any LoRA, pixel for pixel
    assert np.array_equal(plain_render("a photo", 1, 2), np.asarray(Image.open(bench / "images" / "p00_s1_w0.png")))

    code, _ = run_cli(monkeypatch, capsys, "bench", "--lora", run.lora_path, "--model", "tiny-sd1",
                      "--prompt", "a photo", "--weights", "0,1", "--seeds", "1", "--steps", "1")
    assert code == 0 and (run.run_dir / "bench-2" / "index.html").is_file()  # a second bench never overwrites


@pytest.mark.parametrize("network", ["locon", "loha", "lokr"])
def test_every_network_type_benches_with_weight_0_as_the_base_model(tmp_path: Path, network: str) -> None:
    """LoCon loads through diffusers, LoHa/LoKr through lorakit's own loader onto peft: in both, weight 0 switches
    the network off and weight 1 applies it."""
    from lorakit.bench.plan import BenchPlan
    from lorakit.bench.render import render_plan

    images = write_images(tmp_path / "img", count=2)
    run = api.train(load_config(sets=[
        f'data.train_data_dir="{images}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        f"network.network_module='{network}'", "network.network_dim=4", "network.conv_dim=2",
        "train.max_train_steps=2", "train.learning_rate=5e-2", "checkpoint.every_n_steps=0",
        "checkpoint.at_end=false"]))
    plan = BenchPlan(prompts=["a photo"], seeds=[3], weights=[0.0, 1.0], steps=1, lora=str(run.lora_path),
                     model="tiny-sd1")
    base, applied = (np.asarray(Image.open(r.path)) for r in render_plan(plan, tmp_path / "bench"))
    assert np.array_equal(base, plain_render("a photo", 3, 1))  # the base model's image, pixel for pixel
    assert not np.array_equal(base, applied)
