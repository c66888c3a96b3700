"""The diffusion training loss: noise (with offset), target by prediction type, min-SNR weighting."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler


def add_noise(
    latents: torch.Tensor, scheduler: DDPMScheduler, gen: torch.Generator, noise_offset: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, noise, timesteps) for a batch; timesteps uniform over the schedule."""
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=gen, device=latents.device, dtype=latents.dtype)
    if noise_offset:
        noise = noise + noise_offset * torch.randn(
            (b, latents.shape[1], 1, 1), generator=gen, device=latents.device, dtype=latents.dtype
        )
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen, device=latents.device)
    return scheduler.add_noise(latents, noise, t), noise, t


def target_for(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet should predict: the noise (epsilon) or the velocity (v-prediction)."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return noise


def snr(scheduler: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio alpha²/sigma² at timesteps t."""
    alphas = scheduler.alphas_cumprod.to(t.device)[t].float()
    return alphas / (1.0 - alphas)


def diffusion_loss(
    pred: torch.Tensor, target: torch.Tensor, scheduler: DDPMScheduler, t: torch.Tensor, min_snr_gamma: float | None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean-squared error per sample, times the sample's weight (kohya's loss_weights: prior_loss_weight for a
    regularisation image), optionally times min(SNR, γ)/SNR (v-prediction: /(SNR+1)); then the batch mean."""
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if weights is not None:
        per_sample = per_sample * weights.to(per_sample)
    if min_snr_gamma:
        s = snr(scheduler, t)
        denom = s + 1 if scheduler.config.prediction_type == "v_prediction" else s
        per_sample = per_sample * torch.clamp(s, max=min_snr_gamma) / denom
    return per_sample.mean()
