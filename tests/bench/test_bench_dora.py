"""`lorakit bench` on a DoRA file: the base model loaded once, the DoRA merged at each weight into the restored
original weights; every image equals a fresh model with the DoRA applied as `lorakit generate` does, weight 0 the
base model, and the model's weights are the originals again after the sweep."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from conftest import write_images
from lorakit import api
from lorakit.config.loader import load_config

PROMPT, SEED, STEPS = "a photo", 3, 2


@pytest.fixture(scope="module")
def dora_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("dora")
    images = write_images(tmp / "img", count=2)
    run = api.train(load_config(sets=[
        f'data.train_data_dir="{images}"', f'output.output_dir="{tmp / "runs"}"', "data.resolution=64",
        "network.network_module='lora'", "network.use_dora=true", "network.network_dim=4",
        "train.max_train_steps=3", "train.learning_rate=5e-2", "checkpoint.every_n_steps=0",
        "checkpoint.at_end=false"]))
    path = Path(run.lora_path)
    assert any(k.endswith(".dora_scale") for k in load_file(str(path)))  # really a DoRA file
    return path


def fresh_parts(lora: Path | None = None, weight: float = 1.0):
    """tiny-sd1 loaded anew, with the bench's default sampler; the DoRA applied as `lorakit generate` does."""
    from lorakit.bench.plan import diffusers_scheduler
    from lorakit.config.schema import ModelSection
    from lorakit.families import load_model
    from lorakit.generate import apply_lora

    parts = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
    parts.pipeline.scheduler = diffusers_scheduler("euler", "normal", dict(parts.pipeline.scheduler.config))
    if lora is not None:
        apply_lora(parts, lora, weight, "tiny-sd1")
    return parts


def render(parts) -> np.ndarray:
    out = parts.pipeline(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=7.0, width=parts.resolution,
                         height=parts.resolution, generator=torch.Generator(device="cpu").manual_seed(SEED))
    return np.asarray(out.images[0])


def base_weights(parts) -> dict[str, torch.Tensor]:
    """Every tensor of the UNet and text encoder under its base-model name (peft's wrapper levels dropped)."""
    out = {}
    for attr in ("unet", "text_encoder"):
        for name, value in getattr(parts.pipeline, attr).state_dict().items():
            if "lora_" not in name:
                out[f"{attr}.{name.replace('.base_layer', '')}"] = value
    return out


def test_dora_bench_equals_fresh_renders_and_restores_the_model(dora_file: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import lorakit.families
    from lorakit.bench.plan import BenchPlan
    from lorakit.bench.render import render_plan

    loaded = []  # the model render_plan works on, to check it afterwards
    real_load = lorakit.families.load_model

    def keep_model(*args, **kwargs):
        loaded.append(real_load(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(lorakit.families, "load_model", keep_model)
    plan = BenchPlan(prompts=[PROMPT], seeds=[SEED], weights=[0.0, 0.5, 1.0], steps=STEPS, lora=str(dora_file),
                     model="tiny-sd1")
    rendered = render_plan(plan, tmp_path / "bench")
    monkeypatch.undo()
    assert [(r.weight, r.path.name) for r in rendered] == [
        (0.0, "p00_s3_w0.png"), (0.5, "p00_s3_w0.5.png"), (1.0, "p00_s3_w1.png")]  # plan order
    zero, half, one = (np.asarray(Image.open(r.path)) for r in rendered)

    base_model = fresh_parts()
    assert np.array_equal(zero, render(base_model))  # weight 0: the base model, pixel for pixel
    assert np.array_equal(one, render(fresh_parts(dora_file, 1.0)))  # as `lorakit generate --weight 1`
    assert np.array_equal(half, render(fresh_parts(dora_file, 0.5)))
    assert not np.array_equal(zero, one) and not np.array_equal(half, one)  # the DoRA changes the image

    # after the sweep the model holds its original weights again, bit for bit
    expected, after = base_weights(base_model), base_weights(loaded[0])
    assert expected.keys() == after.keys()
    assert all(torch.equal(expected[k], after[k]) for k in expected)


def test_dora_merge_follows_the_dora_formula_interpolated(dora_file: Path) -> None:
    """One layer of a fresh model with the DoRA at strength s against the weight computed from the file alone.

    DoRA (peft tuners/lora/variants.py `DoraLinearVariant.merge_unsafe`, dora.py `get_weight_norm`):
    W_dora = m / ‖W + (α/r)·up·down‖ · (W + (α/r)·up·down), the norm per output row (dim=1), m = dora_scale
    (lorakit writes it per output channel: LyCORIS wd_on_output). At strength s ComfyUI's
    comfy/weight_adapter/base.py `weight_decompose` applies W + s·(W_dora − W)."""
    tensors = load_file(str(dora_file))
    name = sorted(k for k in tensors if k.startswith("lora_unet_") and k.endswith("attn1_to_q.dora_scale"))[0]
    name = name.removesuffix(".dora_scale")
    up, down = tensors[f"{name}.lora_up.weight"].float(), tensors[f"{name}.lora_down.weight"].float()
    alpha, magnitude = tensors[f"{name}.alpha"].float(), tensors[f"{name}.dora_scale"].float()

    # kohya's module name: "lora_unet_" + the diffusers module path with "." as "_" (sd-scripts networks/lora.py
    # LoRANetwork.create_modules); peft wraps the layer, its original is `<path>.base_layer`
    def layer_of(parts) -> torch.nn.Module:
        modules = {f"lora_unet_{p.replace('.base_layer', '').replace('.', '_')}": m
                   for p, m in parts.pipeline.unet.named_modules()
                   if isinstance(m, torch.nn.Linear) and "lora_" not in p}
        return modules[name]

    w = layer_of(fresh_parts()).weight.detach().float()
    combined = w + (alpha / down.shape[0]) * (up @ down)
    w_dora = magnitude.reshape(-1, 1) / combined.norm(dim=1, keepdim=True) * combined
    assert not torch.allclose(w_dora, w, atol=1e-4)  # trained: the DoRA moves this layer
    for s in (0.5, 1.0):
        merged = layer_of(fresh_parts(dora_file, s)).weight.detach().float()
        assert torch.allclose(merged, w + s * (w_dora - w), rtol=1e-5, atol=1e-6), s
