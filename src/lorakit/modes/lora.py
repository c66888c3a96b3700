"""Plain LoRA (and DreamBooth): the denoising loss on captioned images; the network (LoRA, LoCon, LoHa, LoKr,
DoRA) on the UNet and optionally the text encoders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch

from ..config.schema import LorakitConfig
from ..data.example import BatchSampler, Example
from ..engine.encode import BatchEncoder, size_conditioning
from ..engine.loss import LossSettings, NoiseSettings, add_noise, diffusion_loss, target_for, \
    zero_terminal_snr_schedule
from ..engine.mode import Stage
from ..engine.speed import unet_input
from ..errors import ConfigError
from ..families import ModelParts
from ..networks.attach import network_parameters

if TYPE_CHECKING:
    from ..engine.trainer import Run


class DenoisingTask:
    """Noise an image's latents at a random timestep and predict the noise (or velocity): kohya's train_network
    loss, with its noise and loss options (engine/loss.py). With train.masked_loss each element's loss is weighted
    by the image's mask first; a regularisation image's loss is weighted by `prior_loss_weight` before the SNR
    weights and the batch mean."""

    def __init__(self, parts: ModelParts, cfg: LorakitConfig, encoder: BatchEncoder, sampler: BatchSampler,
                 prior_loss_weight: float = 1.0) -> None:
        self.parts, self.cfg, self.encoder, self.sampler = parts, cfg, encoder, sampler
        self.prior_loss_weight = prior_loss_weight
        self.text_frozen = False
        t = cfg.train
        self.noise, self.weighting = NoiseSettings.from_train(t), LossSettings.from_train(t)
        self.masked_loss = t.masked_loss
        check_prediction_type(self.weighting, parts.noise_scheduler.config.prediction_type)
        # Noising and the target use the (rescaled) copy; the SNR weights keep the model's schedule, as in
        # sd-scripts, whose all_snr table is computed before fix_noise_scheduler_betas_for_zero_terminal_snr.
        self.snr_scheduler = parts.noise_scheduler
        self.scheduler = zero_terminal_snr_schedule(parts.noise_scheduler) if t.zero_terminal_snr \
            else parts.noise_scheduler

    def freeze_text_encoders(self) -> None:
        for te in self.parts.text_encoders:
            for p in network_parameters(te):
                p.requires_grad_(False)
                p.grad = None
            te.eval()
        self.text_frozen = True

    def train(self, on: bool) -> None:
        self.parts.unet.train(on)
        for te in self.parts.text_encoders:
            te.train(on and self.cfg.network.train_text_encoder and not self.text_frozen)

    def loss(self, examples: list[Example], gen: torch.Generator, rows: slice | None = None) -> torch.Tensor | None:
        fam = self.parts.family
        mine = examples if rows is None else examples[rows]
        latents = self.encoder.image_latents(mine or examples[:1])
        if rows is not None:  # several processes: the whole batch's draws, this process's rows (engine/distributed.py)
            whole = latents.new_zeros((len(examples), *latents.shape[1:]))
            whole[rows] = latents[: len(mine)]
            noisy, noise, timesteps = (x[rows] for x in add_noise(whole, self.scheduler, gen, self.noise))
            if not mine:
                return None
        else:
            noisy, noise, timesteps = add_noise(latents, self.scheduler, gen, self.noise)  # fp32 (issue 12)
        cond = self.encoder.text_conditioning([e.caption for e in mine])
        pred = self.parts.unet(unet_input(noisy, self.cfg.train), timesteps,
                               **fam.unet_kwargs(cond, size_conditioning(mine))).sample
        weights = sample_weights(mine, self.prior_loss_weight) if any(e.is_reg for e in mine) else None
        target = target_for(self.scheduler, latents, noise, timesteps)
        mask = self.encoder.loss_masks(mine, tuple(latents.shape[-2:])) if self.masked_loss else None
        return diffusion_loss(pred, target, self.snr_scheduler, timesteps, self.weighting, weights, mask=mask)


def check_prediction_type(weighting: LossSettings, prediction_type: str) -> None:
    """The loss options that only fit one prediction type, against the loaded model's (sd-scripts refuses them in
    verify_training_args; the config alone may not tell, with model.v_parameterization unset)."""
    v_prediction = prediction_type == "v_prediction"
    if weighting.scale_v_pred_loss_like_noise_pred and not v_prediction:
        raise ConfigError(["train.scale_v_pred_loss_like_noise_pred: the model predicts noise (epsilon), and this "
                           "scales a v-prediction loss; remove it (or set model.v_parameterization = true for a "
                           "v-prediction model)"])
    if weighting.v_pred_like_loss and v_prediction:
        raise ConfigError(["train.v_pred_like_loss: the model already predicts v; this adds a v-like term to a "
                           "noise-prediction loss; remove it"])


def sample_weights(examples: list[Example], prior_loss_weight: float) -> torch.Tensor:
    """Per-sample loss weights: `prior_loss_weight` for regularisation images, 1 for training images."""
    return torch.tensor([prior_loss_weight if e.is_reg else 1.0 for e in examples])


class LoraMode:
    """kohya's train_network: one stage over the dataset (training images, and regularisation images when
    data.reg_data_dir is set)."""

    uses_dataset = True
    uses_images = True
    data_parallel = True

    def __init__(self, run: Run) -> None:
        from ..config.plan import build_plan

        self.run = run
        run.attach(run.cfg.network, weights=run.cfg.network.network_weights)
        self.plan = build_plan(run.cfg, run.dataset, run.parts, processes=run.shard.world)

    def plan_lines(self) -> list[str]:
        from ..config.plan import render_plan

        return render_plan(self.plan)

    def total_steps(self) -> int:
        return self.plan.steps.total_steps

    def stages(self) -> Iterator[Stage]:
        from ..engine.validation import held_out_loss

        run, cfg, dataset, s = self.run, self.run.cfg, self.run.dataset, self.plan.steps
        assert dataset is not None
        task = DenoisingTask(run.parts, cfg, run.encoder, dataset.sampler, cfg.mode.prior_loss_weight)
        groups = run.param_groups(cfg.train, cfg.network)
        with run.accelerator.main_process_first():  # several processes: the main one fills a disk cache first
            run.encoder.prefill(dataset.examples, cfg.train.train_batch_size, run.events.on_cache)
        validate = (lambda: held_out_loss(task, run.encoder, dataset.validation, cfg.train.train_batch_size)) \
            if dataset.validation else None
        yield Stage(
            cfg=cfg, task=task, groups=groups, steps=s.total_steps, steps_per_epoch=s.steps_per_epoch,
            output_name=cfg.output.output_name, warmup_steps=s.warmup_steps, text_encoder_stop=s.text_encoder_stop,
            validate=validate, num_images=len(dataset.train), tag_frequency=dataset.tag_frequency,
            resolution=cfg.data.max_size,
        )
