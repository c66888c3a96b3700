"""Under bf16 the noising is computed in fp32 and cast only at the UNet's input (issue 12): in bf16, ᾱ and the
latents round so that at t = 0 and 1 the noise vanishes and at t = 2 it is 23% too strong."""

from __future__ import annotations

from pathlib import Path

import torch

from conftest import write_images
from lorakit.config.loader import load_config
from lorakit.data.pipeline import build_dataset
from lorakit.engine import loss as loss_module
from lorakit.engine.encode import BatchEncoder
from lorakit.families import load_model
from lorakit.modes.lora import DenoisingTask


class Output:
    def __init__(self, sample: torch.Tensor) -> None:
        self.sample = sample


def test_noisy_latents_and_target_are_fp32_maths_cast_at_the_end(tmp_path: Path, monkeypatch) -> None:
    images = write_images(tmp_path / "img", count=1, size=(64, 64))
    cfg = load_config(sets=[f'data.train_data_dir="{images}"', "data.resolution=64", "train.mixed_precision='bf16'"])
    parts = load_model(cfg.model, torch.bfloat16)
    encoder = BatchEncoder(parts, torch.device("cpu"), torch.bfloat16, True, True, seed=0)
    dataset = build_dataset(cfg.data, 1, 0)
    task = DenoisingTask(parts, cfg, encoder, dataset.sampler)
    steps = parts.noise_scheduler.config.num_train_timesteps
    every_t = torch.arange(steps)
    monkeypatch.setattr(loss_module, "timesteps", lambda b, *a, **k: every_t)  # one of each timestep, 0 … 999
    seen: dict[str, torch.Tensor] = {}

    def unet(noisy, t, **kwargs):
        seen["noisy"], seen["t"] = noisy, t
        return Output(torch.zeros_like(noisy))

    monkeypatch.setattr(parts.unet, "forward", unet)
    captured: dict[str, torch.Tensor] = {}
    original = loss_module.add_noise

    def spy(latents, scheduler, gen, settings):
        noisy, noise, t = original(latents, scheduler, gen, settings)
        captured.update(latents=latents, noise=noise)
        return noisy, noise, t

    monkeypatch.setattr("lorakit.modes.lora.add_noise", spy)
    task.loss([dataset.train[0]] * steps, torch.Generator().manual_seed(0))

    latents, noise = captured["latents"], captured["noise"]
    assert latents.dtype == torch.float32 and noise.dtype == torch.float32  # cached and drawn in fp32
    # x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε in float64, then rounded once to bf16 (the UNet's input precision)
    alpha = parts.noise_scheduler.alphas_cumprod.double()[every_t].view(-1, 1, 1, 1)
    expected = alpha.sqrt() * latents.double() + (1 - alpha).sqrt() * noise.double()
    assert seen["noisy"].dtype == torch.bfloat16
    assert torch.equal(seen["noisy"], expected.to(torch.bfloat16)) or torch.allclose(
        seen["noisy"].double(), expected, rtol=2 ** -8, atol=0)  # fp32 then bf16 can round the last bit apart
    # t = 0 and 1 carry noise: what bf16 maths lost (σ rounded to 0)
    for t in (0, 1):
        assert not torch.equal(seen["noisy"][t].double(), latents[t].to(torch.bfloat16).double())


def test_sdxl_time_ids_keep_odd_sizes() -> None:
    from lorakit.families.sdxl import SDXL

    cond = {"encoder_hidden_states": torch.zeros(1, 2, 4, dtype=torch.bfloat16),
            "text_embeds": torch.zeros(1, 4, dtype=torch.bfloat16)}
    kwargs = SDXL().unet_kwargs(cond, [{"original_size": (1365, 2047), "crop_top_left": (3, 0),
                                        "target_size": (1024, 1024)}])
    assert kwargs["added_cond_kwargs"]["time_ids"].tolist() == [[1365, 2047, 3, 0, 1024, 1024]]


def test_the_vae_encodes_in_its_own_precision_inside_the_training_autocast(tmp_path: Path) -> None:
    """A VAE kept in fp32 (force_upcast: the SDXL VAE NaNs in fp16) must not run in bf16 because the training
    step's autocast is on: the latents inside and outside the autocast are the same."""
    images = write_images(tmp_path / "img", count=1, size=(64, 64))
    cfg = load_config(sets=[f'data.train_data_dir="{images}"', "data.resolution=64"])
    parts = load_model(cfg.model)  # fp32 VAE
    example = build_dataset(cfg.data, 1, 0).train[0]

    def latents(autocast: bool) -> torch.Tensor:
        encoder = BatchEncoder(parts, torch.device("cpu"), torch.bfloat16, False, False, seed=0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return encoder.encode_images([example])

    assert torch.equal(latents(True), latents(False))
