"""The diffusion training loss as sd-scripts computes it: the noise (offset, adaptive offset, multi-resolution),
the timesteps (min/max), input perturbation, the target by prediction type, and the per-sample weights (min-SNR,
v-prediction scaling, v-prediction-like term, debiased estimation), plus the zero-terminal-SNR schedule.

Formulas and distributions follow sd-scripts (library/train_util.py get_noise_noisy_latents_and_timesteps,
library/custom_train_functions.py); every random draw comes from the run's generator, so a run is reproducible and
resumable. Its random stream is not sd-scripts' (which draws from torch's and Python's global generators).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

SNR_CAP = 1000.0  # sd-scripts' get_snr_scale / apply_debiased_estimation: SNR is capped (inf at t = 0 otherwise)


@dataclass(frozen=True)
class NoiseSettings:
    """How the training noise and timesteps are drawn (train section fields of the same names)."""

    noise_offset: float = 0.0
    noise_offset_random_strength: bool = False
    adaptive_noise_scale: float | None = None
    multires_noise_iterations: int | None = None
    multires_noise_discount: float = 0.3
    ip_noise_gamma: float | None = None
    ip_noise_gamma_random_strength: bool = False
    min_timestep: int | None = None
    max_timestep: int | None = None

    @classmethod
    def from_train(cls, train: Any) -> NoiseSettings:
        """Every field read from the train section, whether on or off."""
        return cls(**{f.name: getattr(train, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class LossSettings:
    """The per-sample loss weights, applied in sd-scripts' order (train_network.py post_process_loss)."""

    min_snr_gamma: float | None = None
    scale_v_pred_loss_like_noise_pred: bool = False
    v_pred_like_loss: float | None = None
    debiased_estimation_loss: bool = False

    @classmethod
    def from_train(cls, train: Any) -> LossSettings:
        """Every field read from the train section, whether on or off."""
        return cls(**{f.name: getattr(train, f.name) for f in fields(cls)})


def add_noise(latents: torch.Tensor, scheduler: DDPMScheduler, gen: torch.Generator,
              settings: NoiseSettings = NoiseSettings()) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, noise, timesteps) for a batch, as sd-scripts' get_noise_noisy_latents_and_timesteps: the
    noise is the target's (epsilon) noise; input perturbation noises the latents a little more than that.

    Draw order: noise, [offset strength], [offset], [multi-resolution ratios, levels], timesteps, [perturbation
    strength], [perturbation]; with every option off it is noise then timesteps (the order earlier versions drew in),
    so runs without these options are bit-identical to before. sd-scripts draws in the same order, but from torch's
    and Python's global generators, with the timesteps on the CPU."""
    s, b, device, dtype = settings, latents.shape[0], latents.device, latents.dtype
    noise = torch.randn(latents.shape, generator=gen, device=device, dtype=dtype)
    if s.noise_offset:
        noise = offset_noise(latents, noise, gen, s)
    if s.multires_noise_iterations:
        noise = pyramid_noise(noise, gen, s.multires_noise_iterations, s.multires_noise_discount)
    t = timesteps(b, scheduler, gen, device, s.min_timestep, s.max_timestep)
    model_noise = noise
    if s.ip_noise_gamma:
        strength: Any = s.ip_noise_gamma
        if s.ip_noise_gamma_random_strength:  # one factor for the batch: torch.rand(1) in sd-scripts
            strength = torch.rand(1, generator=gen, device=device, dtype=dtype) * s.ip_noise_gamma
        model_noise = noise + strength * torch.randn(latents.shape, generator=gen, device=device, dtype=dtype)
    return scheduler.add_noise(latents, model_noise, t), noise, t


def offset_noise(latents: torch.Tensor, noise: torch.Tensor, gen: torch.Generator, s: NoiseSettings) -> torch.Tensor:
    """One random value per image and channel added to the noise, times the offset (sd-scripts apply_noise_offset):
    with `noise_offset_random_strength` the offset is first scaled by one uniform [0, 1) factor for the batch; with
    `adaptive_noise_scale` each channel's offset grows by scale × |its latent mean| (clamped at 0)."""
    device, dtype = latents.device, latents.dtype
    offset: Any = s.noise_offset
    if s.noise_offset_random_strength:
        offset = torch.rand(1, generator=gen, device=device, dtype=dtype) * s.noise_offset
    if s.adaptive_noise_scale is not None:
        offset = torch.clamp(offset + s.adaptive_noise_scale * latents.mean(dim=(2, 3), keepdim=True).abs(), min=0.0)
    return noise + offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=gen, device=device,
                                        dtype=dtype)


def pyramid_noise(noise: torch.Tensor, gen: torch.Generator, iterations: int, discount: float) -> torch.Tensor:
    """Multi-resolution noise (sd-scripts pyramid_noise_like): level i adds noise drawn at the size divided by
    r^i (r uniform in [2, 4) per level), upsampled bilinearly and weighted discount^i, until a side reaches 1;
    the sum is divided by its standard deviation (over the whole batch, as there).

    sd-scripts draws each r from Python's `random` between the levels' noise; here all r come first, from `gen`,
    in one transfer (a GPU generator would otherwise make the host wait once per level)."""
    b, c, h, w = noise.shape
    ratios = (torch.rand(iterations, generator=gen, device=noise.device, dtype=torch.float64) * 2 + 2).tolist()
    out = noise.clone()
    for i, r in enumerate(ratios):
        hn, wn = max(1, int(h / r**i)), max(1, int(w / r**i))
        level = torch.randn((b, c, hn, wn), generator=gen, device=noise.device, dtype=noise.dtype)
        out = out + F.interpolate(level, size=(h, w), mode="bilinear") * discount**i
        if hn == 1 or wn == 1:
            break  # the lowest resolution is 1×1
    return out / out.std()


def timesteps(b: int, scheduler: DDPMScheduler, gen: torch.Generator, device: torch.device,
              min_timestep: int | None = None, max_timestep: int | None = None) -> torch.Tensor:
    """b timesteps uniform in [min, max) (0 and the schedule's length when unset); all = max when min ≥ max
    (sd-scripts get_timesteps; it draws on the CPU, here on the generator's device)."""
    low = 0 if min_timestep is None else min_timestep
    high = scheduler.config.num_train_timesteps if max_timestep is None else max_timestep
    if low < high:
        return torch.randint(low, high, (b,), generator=gen, device=device)
    return torch.full((b,), high, dtype=torch.long, device=device)


def target_for(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity (v-prediction)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return noise


def zero_terminal_snr_schedule(scheduler: DDPMScheduler) -> DDPMScheduler:
    """A copy of the schedule with betas rescaled so the last timestep's alphas_cumprod is 0 (pure noise) and the
    first keeps its value (Lin et al. 2023; sd-scripts fix_noise_scheduler_betas_for_zero_terminal_snr). The given
    scheduler is left as it is, so building two tasks (Difference's passes) never rescales twice."""
    fixed = copy.deepcopy(scheduler)
    root = (1.0 - scheduler.betas).cumprod(0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))  # shift the last to 0, scale the first back to its value
    alphas_bar = root**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    fixed.betas = 1.0 - alphas
    fixed.alphas = 1.0 - fixed.betas
    fixed.alphas_cumprod = torch.cumprod(fixed.alphas, dim=0)
    return fixed


def snr(scheduler: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha²/sigma² at timesteps t."""
    alphas = scheduler.alphas_cumprod.to(t.device)[t].float()
    return alphas / (1.0 - alphas)


def snr_scale(scheduler: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    """SNR/(SNR+1) with SNR capped at 1000 (sd-scripts get_snr_scale)."""
    s = torch.clamp(snr(scheduler, t), max=SNR_CAP)
    return s / (s + 1)


def weigh(per_sample: torch.Tensor, scheduler: DDPMScheduler, t: torch.Tensor, s: LossSettings) -> torch.Tensor:
    """Per-sample losses times sd-scripts' weights, in its order (train_network.py post_process_loss):
    min-SNR (apply_snr_weight: min(SNR, γ)/SNR, v-prediction /(SNR+1); SNR not capped), then
    SNR/(SNR+1) (scale_v_prediction_loss_like_noise_prediction), then + loss/(SNR/(SNR+1)) × v_pred_like_loss
    (add_v_prediction_like_loss), then 1/√SNR, v-prediction 1/(SNR+1) (apply_debiased_estimation; SNR capped)."""
    v_prediction = scheduler.config.prediction_type == "v_prediction"
    if s.min_snr_gamma:
        ratio = snr(scheduler, t)
        denom = ratio + 1 if v_prediction else ratio
        per_sample = per_sample * torch.clamp(ratio, max=s.min_snr_gamma) / denom
    if s.scale_v_pred_loss_like_noise_pred:
        per_sample = per_sample * snr_scale(scheduler, t)
    if s.v_pred_like_loss:
        per_sample = per_sample + per_sample / snr_scale(scheduler, t) * s.v_pred_like_loss
    if s.debiased_estimation_loss:
        capped = torch.clamp(snr(scheduler, t), max=SNR_CAP)
        per_sample = per_sample * (1 / (capped + 1) if v_prediction else 1 / torch.sqrt(capped))
    return per_sample


def latent_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (height, width) pixel mask in [0, 1] → (1, h, w) at the latent size by area averaging, as sd-scripts'
    apply_masked_loss (F.interpolate(mode="area"), per image here: area averaging never mixes images)."""
    return F.interpolate(mask.float()[None, None], size=tuple(size), mode="area")[0]


def diffusion_loss(
    pred: torch.Tensor, target: torch.Tensor, scheduler: DDPMScheduler, t: torch.Tensor,
    weighting: LossSettings | float | None, weights: torch.Tensor | None = None, mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean-squared error per element, times the loss mask (`mask`: (B, 1, h, w), train.masked_loss), then its
    mean per sample — not divided by the mask's mean, as sd-scripts (train_network.py process_batch: apply_masked_loss
    before `loss.mean(dim=[1, 2, 3])`) — times the sample's weight (kohya's loss_weights: prior_loss_weight for a
    regularisation image), then the SNR weights (`weighting`: LossSettings, or a min-SNR γ alone); the batch mean.
    `scheduler` gives the prediction type and the SNR of each timestep."""
    per_element = F.mse_loss(pred.float(), target.float(), reduction="none")
    if mask is not None:
        per_element = per_element * mask.to(per_element)
    per_sample = per_element.mean(dim=(1, 2, 3))
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    settings = weighting if isinstance(weighting, LossSettings) else LossSettings(min_snr_gamma=weighting)
    return weigh(per_sample, scheduler, t, settings).mean()
