"""sd-scripts' noise and loss options, each against a transcription of its formula written here from sd-scripts
(library/custom_train_functions.py, library/train_util.py get_noise_noisy_latents_and_timesteps, train_network.py
post_process_loss), never against lorakit's own output; then tiny runs with all of them on at once.

Random draws: lorakit takes every draw from the run's generator in a documented order (engine/loss.py add_noise);
the transcriptions draw the same values from a clone of that generator in that order.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

from lorakit import api
from lorakit.config.loader import load_config, resolve, set_layer
from lorakit.config.loss_rules import check_loss_options
from lorakit.config.mode_rules import check_mode
from lorakit.config.schema import LorakitConfig
from lorakit.engine import loss as L
from lorakit.engine.encode import BatchEncoder
from lorakit.errors import ConfigError
from lorakit.families import load_model
from lorakit.modes import lora as lora_mode
from lorakit.modes.lora import DenoisingTask, check_prediction_type


def sd_scheduler(prediction_type: str = "epsilon") -> DDPMScheduler:
    """train_network.py get_noise_scheduler: the schedule sd-scripts trains SD models with."""
    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                         clip_sample=False, prediction_type=prediction_type)


def all_snr(scheduler: DDPMScheduler) -> torch.Tensor:
    """custom_train_functions.prepare_scheduler_for_custom_training: (sqrt(ᾱ) / sqrt(1 − ᾱ))²."""
    a = scheduler.alphas_cumprod
    return (torch.sqrt(a) / torch.sqrt(1.0 - a)) ** 2


def clone(gen: torch.Generator) -> torch.Generator:
    copy = torch.Generator()
    copy.set_state(gen.get_state())
    return copy


LATENTS = torch.randn((2, 4, 16, 12), generator=torch.Generator().manual_seed(5)) + 0.3  # a non-zero mean


# -- noise ------------------------------------------------------------------------------------------------------

def test_every_option_off_draws_noise_then_timesteps() -> None:
    gen = torch.Generator().manual_seed(1)
    ref = clone(gen)
    noisy, noise, t = L.add_noise(LATENTS, sd_scheduler(), gen, L.NoiseSettings())
    assert torch.equal(noise, torch.randn(LATENTS.shape, generator=ref))
    assert torch.equal(t, torch.randint(0, 1000, (2,), generator=ref))
    assert torch.equal(gen.get_state(), ref.get_state())  # nothing else drawn


def test_noise_offset_with_random_strength_and_adaptive_scale() -> None:
    """apply_noise_offset: offset = clamp(offset + scale·|mean of each latent channel|, 0); noise + offset·N(0,1)
    per image and channel; random strength: the offset times one torch.rand(1) first."""
    settings = L.NoiseSettings(noise_offset=0.1, noise_offset_random_strength=True, adaptive_noise_scale=0.05)
    gen = torch.Generator().manual_seed(2)
    ref = clone(gen)
    _, noise, _ = L.add_noise(LATENTS, sd_scheduler(), gen, settings)
    base = torch.randn(LATENTS.shape, generator=ref)
    offset = torch.rand(1, generator=ref) * 0.1
    offset = torch.clamp(offset + 0.05 * torch.abs(LATENTS.mean(dim=(2, 3), keepdim=True)), 0.0, None)
    expected = base + offset * torch.randn((2, 4, 1, 1), generator=ref)
    assert torch.allclose(noise, expected, atol=1e-6)
    assert not torch.allclose(offset[0], offset[1])  # adaptive: each image's channel means set its offset


def test_a_negative_adaptive_scale_never_makes_the_offset_negative() -> None:
    settings = L.NoiseSettings(noise_offset=0.01, adaptive_noise_scale=-10.0)
    gen = torch.Generator().manual_seed(3)
    ref = clone(gen)
    _, noise, _ = L.add_noise(LATENTS, sd_scheduler(), gen, settings)
    assert torch.equal(noise, torch.randn(LATENTS.shape, generator=ref))  # offset clamped to 0 everywhere


def pyramid_transcription(noise: torch.Tensor, ratios: list[float], levels: list[torch.Tensor],
                          discount: float) -> torch.Tensor:
    """custom_train_functions.pyramid_noise_like with its random.random() values and torch.randn levels given."""
    b, c, w, h = noise.shape
    u = torch.nn.Upsample(size=(w, h), mode="bilinear")
    noise = noise.clone()
    for i, r in enumerate(ratios):
        wn, hn = max(1, int(w / (r**i))), max(1, int(h / (r**i)))
        assert levels[i].shape == (b, c, wn, hn)
        noise += u(levels[i]) * discount**i
        if wn == 1 or hn == 1:
            break
    return noise / noise.std()


def test_multires_noise_two_levels() -> None:
    settings = L.NoiseSettings(multires_noise_iterations=2, multires_noise_discount=0.4)
    gen = torch.Generator().manual_seed(4)
    ref = clone(gen)
    _, noise, _ = L.add_noise(LATENTS, sd_scheduler(), gen, settings)
    base = torch.randn(LATENTS.shape, generator=ref)
    rs = (torch.rand(2, generator=ref, dtype=torch.float64) * 2 + 2).tolist()  # r uniform in [2, 4)
    r = rs[1]
    levels = [torch.randn((2, 4, 16, 12), generator=ref), torch.randn((2, 4, int(16 / r), int(12 / r)), generator=ref)]
    assert torch.allclose(noise, pyramid_transcription(base, rs, levels, 0.4), atol=1e-6)
    assert noise.std().item() == pytest.approx(1.0, abs=1e-6)


def test_multires_noise_stops_at_one_pixel() -> None:
    """Ten levels on a 16×12 latent: r ≥ 2, so a side reaches 1 by level 4 and the rest are never drawn."""
    latents = LATENTS[:1]
    gen = torch.Generator().manual_seed(6)
    ref = clone(gen)
    _, noise, t = L.add_noise(latents, sd_scheduler(), gen, L.NoiseSettings(multires_noise_iterations=10))
    base = torch.randn(latents.shape, generator=ref)
    rs = (torch.rand(10, generator=ref, dtype=torch.float64) * 2 + 2).tolist()
    levels = []
    for i, r in enumerate(rs):
        wn, hn = max(1, int(16 / r**i)), max(1, int(12 / r**i))
        levels.append(torch.randn((1, 4, wn, hn), generator=ref))
        if wn == 1 or hn == 1:
            break
    assert len(levels) < 10
    assert torch.allclose(noise, pyramid_transcription(base, rs, levels, 0.3), atol=1e-6)
    assert torch.equal(t, torch.randint(0, 1000, (1,), generator=ref))  # the timesteps follow the last level


def test_noise_offset_then_multires_as_sd_scripts() -> None:
    """Both on: sd-scripts applies the offset, then the pyramid (which normalises the sum, offset included)."""
    settings = L.NoiseSettings(noise_offset=0.1, multires_noise_iterations=1)
    gen = torch.Generator().manual_seed(7)
    ref = clone(gen)
    _, noise, _ = L.add_noise(LATENTS, sd_scheduler(), gen, settings)
    base = torch.randn(LATENTS.shape, generator=ref)
    base = base + 0.1 * torch.randn((2, 4, 1, 1), generator=ref)
    rs = (torch.rand(1, generator=ref, dtype=torch.float64) * 2 + 2).tolist()
    expected = pyramid_transcription(base, rs, [torch.randn((2, 4, 16, 12), generator=ref)], 0.3)
    assert torch.allclose(noise, expected, atol=1e-6)


@pytest.mark.parametrize("low, high", [(200, 300), (0, 1), (999, 1000)])
def test_timesteps_stay_within_min_max(low: int, high: int) -> None:
    """get_timesteps: torch.randint(min, max) — min inclusive, max exclusive."""
    gen = torch.Generator().manual_seed(8)
    t = L.timesteps(4000, sd_scheduler(), gen, torch.device("cpu"), low, high)
    assert t.min().item() == low and t.max().item() == high - 1  # every value in [low, high), both ends reached


def test_min_timestep_at_max_trains_at_max() -> None:
    """get_timesteps: min ≥ max → every timestep is max (no draw)."""
    gen = torch.Generator().manual_seed(9)
    state = gen.get_state()
    t = L.timesteps(3, sd_scheduler(), gen, torch.device("cpu"), 500, 500)
    assert t.tolist() == [500, 500, 500] and t.dtype == torch.long
    assert torch.equal(gen.get_state(), state)


def forward_diffusion(scheduler: DDPMScheduler, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """DDPM's q(x_t | x_0): sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε."""
    a = scheduler.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


@pytest.mark.parametrize("random_strength", [False, True])
def test_ip_noise_gamma_perturbs_the_input_not_the_target(random_strength: bool) -> None:
    """get_noise_noisy_latents_and_timesteps: noisy = add_noise(latents, noise + γ·N(0,1), t), γ times one
    torch.rand(1) with random strength; the noise returned (the target's) is not perturbed."""
    sched = sd_scheduler()
    settings = L.NoiseSettings(ip_noise_gamma=0.1, ip_noise_gamma_random_strength=random_strength)
    gen = torch.Generator().manual_seed(10)
    ref = clone(gen)
    noisy, noise, t = L.add_noise(LATENTS, sched, gen, settings)
    eps = torch.randn(LATENTS.shape, generator=ref)
    assert torch.equal(noise, eps) and torch.equal(t, torch.randint(0, 1000, (2,), generator=ref))
    gamma = torch.rand(1, generator=ref) * 0.1 if random_strength else 0.1
    perturbed = eps + gamma * torch.randn(LATENTS.shape, generator=ref)
    assert torch.allclose(noisy, forward_diffusion(sched, LATENTS, perturbed, t), atol=1e-6)
    assert not torch.allclose(noisy, forward_diffusion(sched, LATENTS, eps, t), atol=1e-3)


# -- zero terminal SNR --------------------------------------------------------------------------------------------

def zero_terminal_transcription(betas: torch.Tensor) -> torch.Tensor:
    """fix_noise_scheduler_betas_for_zero_terminal_snr's enforce_zero_terminal_snr, then cumprod(1 − betas)."""
    alphas_bar_sqrt = (1 - betas).cumprod(0).sqrt()
    a0, at = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt -= at
    alphas_bar_sqrt *= a0 / (a0 - at)
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    betas = 1 - alphas
    return torch.cumprod(1.0 - betas, dim=0)


def test_zero_terminal_snr_schedule() -> None:
    sched = sd_scheduler()
    original = sched.alphas_cumprod.clone()
    fixed = L.zero_terminal_snr_schedule(sched)
    assert fixed.alphas_cumprod[-1].item() == 0.0  # the last timestep is pure noise
    assert fixed.alphas_cumprod[0].item() == pytest.approx(original[0].item(), rel=1e-6)  # the first unchanged
    assert torch.allclose(fixed.alphas_cumprod, zero_terminal_transcription(sched.betas), atol=1e-7)
    assert torch.equal(sched.alphas_cumprod, original)  # the given schedule is not touched
    noise = torch.randn(LATENTS.shape, generator=torch.Generator().manual_seed(0))
    last = torch.tensor([999, 999])
    assert torch.equal(fixed.add_noise(LATENTS, noise, last), noise)
    v = fixed.get_velocity(LATENTS, noise, last)  # v = sqrt(ᾱ)·ε − sqrt(1 − ᾱ)·x0 = −x0 at ᾱ = 0
    assert torch.allclose(v, -LATENTS)


# -- loss weights -----------------------------------------------------------------------------------------------

T = torch.tensor([0, 1, 10, 400, 999])
ONES = torch.ones(5)


def capped_snr(sched: DDPMScheduler) -> torch.Tensor:
    """get_snr_scale / apply_debiased_estimation: all_snr[t], then torch.minimum(snr, 1000)."""
    return torch.minimum(all_snr(sched)[T], torch.ones(5) * 1000)


def test_debiased_estimation_epsilon_and_v() -> None:
    """apply_debiased_estimation: 1/sqrt(snr) (v-prediction: 1/(snr + 1)), snr capped at 1000 (t = 0 is above)."""
    eps, v = sd_scheduler(), sd_scheduler("v_prediction")
    assert all_snr(eps)[0] > 1000  # the cap matters at t = 0
    got = L.weigh(ONES, eps, T, L.LossSettings(debiased_estimation_loss=True))
    assert torch.allclose(got, 1 / torch.sqrt(capped_snr(eps)), rtol=1e-5)
    assert got[0].item() == pytest.approx(1 / math.sqrt(1000), rel=1e-6)
    got = L.weigh(ONES, v, T, L.LossSettings(debiased_estimation_loss=True))
    assert torch.allclose(got, 1 / (capped_snr(v) + 1), rtol=1e-5)


def test_scale_v_pred_loss_like_noise_pred() -> None:
    """scale_v_prediction_loss_like_noise_prediction: loss · snr/(snr + 1), snr capped at 1000."""
    v = sd_scheduler("v_prediction")
    got = L.weigh(ONES * 2, v, T, L.LossSettings(scale_v_pred_loss_like_noise_pred=True))
    assert torch.allclose(got, 2 * capped_snr(v) / (capped_snr(v) + 1), rtol=1e-5)


def test_v_pred_like_loss() -> None:
    """add_v_prediction_like_loss: loss + loss / (snr/(snr + 1)) · v_pred_like_loss."""
    eps = sd_scheduler()
    loss = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0])
    got = L.weigh(loss, eps, T, L.LossSettings(v_pred_like_loss=0.3))
    scale = capped_snr(eps) / (capped_snr(eps) + 1)
    assert torch.allclose(got, loss + loss / scale * 0.3, rtol=1e-5)


def test_weights_apply_in_sd_scripts_order() -> None:
    """post_process_loss: min-SNR, then scale_v_pred, then v_pred_like, then debiased (each on the previous)."""
    eps = sd_scheduler()
    loss = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0])
    snr = all_snr(eps)[T]
    expected = loss * torch.minimum(snr, torch.full_like(snr, 5.0)) / snr  # apply_snr_weight (no cap)
    scale = capped_snr(eps) / (capped_snr(eps) + 1)
    expected = expected + expected / scale * 0.2
    expected = expected / torch.sqrt(capped_snr(eps))
    settings = L.LossSettings(min_snr_gamma=5.0, v_pred_like_loss=0.2, debiased_estimation_loss=True)
    assert torch.allclose(L.weigh(loss, eps, T, settings), expected, rtol=1e-5)
    pred = torch.zeros((5, 4, 2, 2))
    target = loss.sqrt().reshape(5, 1, 1, 1).expand(5, 4, 2, 2)  # per-sample MSE = loss
    assert L.diffusion_loss(pred, target, eps, T, settings).item() == pytest.approx(expected.mean().item(), rel=1e-5)


def test_prediction_type_mismatches_are_refused() -> None:
    with pytest.raises(ConfigError, match="scale_v_pred_loss_like_noise_pred"):
        check_prediction_type(L.LossSettings(scale_v_pred_loss_like_noise_pred=True), "epsilon")
    with pytest.raises(ConfigError, match="v_pred_like_loss"):
        check_prediction_type(L.LossSettings(v_pred_like_loss=0.1), "v_prediction")
    check_prediction_type(L.LossSettings(scale_v_pred_loss_like_noise_pred=True), "v_prediction")
    check_prediction_type(L.LossSettings(v_pred_like_loss=0.1), "epsilon")


# -- config checks ------------------------------------------------------------------------------------------------

def schema_only(*sets: str) -> LorakitConfig:
    """A config through the schema alone (load_config would raise on the semantic errors tested here)."""
    return resolve([set_layer(list(sets))])


def findings(*sets: str) -> dict[str, bool]:
    """{key: is an error} of the loss checks for a config."""
    return {f.key: f.error for f in check_loss_options(schema_only(*sets))}


def test_config_checks() -> None:
    assert findings() == {}
    assert findings("train.adaptive_noise_scale=0.01") == {"train.adaptive_noise_scale": True}
    assert findings("train.adaptive_noise_scale=0.01", "train.noise_offset=0.05") == {}
    assert findings("train.min_timestep=600", "train.max_timestep=500") == {"train.min_timestep": True}
    assert findings("train.min_timestep=1000") == {"train.min_timestep": True}
    assert findings("train.min_timestep=500", "train.max_timestep=500") == {}  # trains at 500 only
    assert findings("train.noise_offset_random_strength=true", "train.ip_noise_gamma_random_strength=true",
                    "train.multires_noise_discount=0.5") == {
        "train.noise_offset_random_strength": False, "train.ip_noise_gamma_random_strength": False,
        "train.multires_noise_discount": False}
    assert findings("train.scale_v_pred_loss_like_noise_pred=true", "model.v_parameterization=false") == {
        "train.scale_v_pred_loss_like_noise_pred": True}
    assert findings("train.v_pred_like_loss=0.1", "model.v_parameterization=true") == {"train.v_pred_like_loss": True}
    assert findings("train.zero_terminal_snr=true", "model.v_parameterization=false") == {
        "train.zero_terminal_snr": False}
    assert findings("train.zero_terminal_snr=true", "model.v_parameterization=true",
                    "train.scale_v_pred_loss_like_noise_pred=true") == {}


NOISE_OPTIONS = ["train.noise_offset_random_strength=true", "train.adaptive_noise_scale=0.01",
                 "train.multires_noise_iterations=6", "train.multires_noise_discount=0.5", "train.ip_noise_gamma=0.1",
                 "train.ip_noise_gamma_random_strength=true", "train.zero_terminal_snr=true", "train.min_timestep=10",
                 "train.max_timestep=900", "train.debiased_estimation_loss=true",
                 "train.scale_v_pred_loss_like_noise_pred=true", "train.v_pred_like_loss=0.1"]


@pytest.mark.parametrize("option", NOISE_OPTIONS)
def test_ileco_refuses_the_noise_and_loss_options(option: str) -> None:
    key = re.escape(option.split("=")[0])
    with pytest.raises(ConfigError, match=rf"{key}: is not used by mode 'ileco': "):
        load_config(sets=["mode.type='ileco'", "mode.original_prompt='cat'", option])


def test_difference_accepts_them() -> None:
    cfg = schema_only("mode.type='difference'", "mode.original_image='a.png'", "mode.target_image='b.png'",
                      "train.noise_offset=0.05", *NOISE_OPTIONS)
    assert check_mode(cfg) == []


# -- tiny runs ----------------------------------------------------------------------------------------------------

def test_two_tasks_on_one_model_rescale_the_schedule_once(tmp_path: Path, image_dir: Path) -> None:
    """Difference builds a task per pass on the same model: each rescales its own copy, the model's stays."""
    cfg = load_config(sets=[f'data.train_data_dir="{image_dir}"', "data.resolution=64", "train.zero_terminal_snr=true"])
    parts = load_model(cfg.model)
    original = parts.noise_scheduler.alphas_cumprod.clone()
    enc = BatchEncoder(parts, torch.device("cpu"), torch.float32, False, False, seed=0)
    first, second = (DenoisingTask(parts, cfg, enc, None) for _ in range(2))  # type: ignore[arg-type]
    expected = zero_terminal_transcription(parts.noise_scheduler.betas)
    for task in (first, second):
        assert torch.allclose(task.scheduler.alphas_cumprod, expected, atol=1e-7)
        assert task.snr_scheduler is parts.noise_scheduler  # SNR weights: sd-scripts' all_snr, computed before
    assert torch.equal(parts.noise_scheduler.alphas_cumprod, original)


ALL_ON = ["train.noise_offset=0.05", "train.noise_offset_random_strength=true", "train.adaptive_noise_scale=0.01",
          "train.multires_noise_iterations=3", "train.multires_noise_discount=0.4", "train.ip_noise_gamma=0.1",
          "train.ip_noise_gamma_random_strength=true", "train.min_timestep=499", "train.max_timestep=500",
          "train.debiased_estimation_loss=true", "train.zero_terminal_snr=true", "train.min_snr_gamma=5.0",
          "train.scale_weight_norms=1.0"]
PREDICTION_OPTIONS = {"tiny-sd1": "train.v_pred_like_loss=0.2",  # an epsilon model
                      "tiny-sd2-v": "train.scale_v_pred_loss_like_noise_pred=true"}  # a v-prediction model


@pytest.mark.parametrize("model", list(PREDICTION_OPTIONS))
def test_a_run_with_every_option_on(model: str, tmp_path: Path, image_dir: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A few steps with all options at once: finite losses, and each option seen where it acts."""
    seen: list[dict] = []

    def spy_noise(latents, scheduler, gen, settings):
        noisy, noise, t = L.add_noise(latents, scheduler, gen, settings)
        seen.append({"t": t.tolist(), "last_alpha": scheduler.alphas_cumprod[-1].item(), "std": noise.std().item(),
                     "perturbed": not torch.allclose(noisy, scheduler.add_noise(latents, noise, t))})
        return noisy, noise, t

    weighting: list = []

    def spy_loss(pred, target, scheduler, t, settings, weights=None, **kwargs):
        weighting.append((settings, scheduler.alphas_cumprod[-1].item()))
        return L.diffusion_loss(pred, target, scheduler, t, settings, weights, **kwargs)

    monkeypatch.setattr(lora_mode, "add_noise", spy_noise)
    monkeypatch.setattr(lora_mode, "diffusion_loss", spy_loss)
    cfg = load_config(sets=[
        f'model.pretrained_model_name_or_path="{model}"', f'data.train_data_dir="{image_dir}"',
        f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64", "train.max_train_steps=2",
        "network.network_dim=2", "train.train_batch_size=2", *ALL_ON, PREDICTION_OPTIONS[model]])
    assert check_loss_options(cfg) == []
    result = api.train(cfg)
    rows = list(csv.DictReader(open(result.run_dir / "train" / "log.csv")))
    assert len(rows) == 2 and all(math.isfinite(float(r["loss"])) for r in rows)
    assert len(seen) == 2
    for step in seen:
        assert step["t"] == [499, 499]  # min_timestep = max_timestep − 1: only that timestep
        assert step["last_alpha"] == 0.0  # noised on the zero-terminal-SNR schedule
        assert step["std"] == pytest.approx(1.0, abs=1e-5)  # the multi-resolution sum, normalised
        assert step["perturbed"]  # input perturbation
    settings, snr_last_alpha = weighting[0]
    assert settings.debiased_estimation_loss and settings.min_snr_gamma == 5.0
    assert settings.v_pred_like_loss == 0.2 or settings.scale_v_pred_loss_like_noise_pred
    assert snr_last_alpha > 0  # SNR weights from the model's schedule, as sd-scripts' all_snr
