"""Plain LoRA (and DreamBooth): the denoising loss on captioned images; the network (LoRA, LoCon, LoHa, LoKr,
DoRA) on the UNet and optionally the text encoders."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

import torch

from ..config.schema import LorakitConfig
from ..data.example import BatchSampler, Example
from ..engine.encode import BatchEncoder, size_conditioning
from ..engine.loss import add_noise, diffusion_loss, target_for
from ..engine.mode import Stage
from ..families import ModelParts
from ..networks.attach import network_parameters

if TYPE_CHECKING:
    from ..engine.trainer import Run


class DenoisingTask:
    """Noise an image's latents at a random timestep and predict the noise (or velocity): kohya's train_network
    loss. A regularisation image's loss is weighted by `prior_loss_weight` before the batch mean."""

    def __init__(self, parts: ModelParts, cfg: LorakitConfig, encoder: BatchEncoder, sampler: BatchSampler,
                 prior_loss_weight: float = 1.0) -> None:
        self.parts, self.cfg, self.encoder, self.sampler = parts, cfg, encoder, sampler
        self.prior_loss_weight = prior_loss_weight
        self.text_frozen = False

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

    def loss(self, examples: list[Example], gen: torch.Generator) -> torch.Tensor:
        t, fam = self.cfg.train, self.parts.family
        latents = self.encoder.image_latents(examples)
        cond = self.encoder.text_conditioning([e.caption for e in examples])
        sched = self.parts.noise_scheduler
        noisy, noise, timesteps = add_noise(latents, sched, gen, t.noise_offset)
        pred = self.parts.unet(noisy, timesteps, **fam.unet_kwargs(cond, size_conditioning(examples))).sample
        weights = sample_weights(examples, self.prior_loss_weight) if any(e.is_reg for e in examples) else None
        return diffusion_loss(pred, target_for(sched, latents, noise, timesteps), sched, timesteps, t.min_snr_gamma,
                              weights)


def sample_weights(examples: list[Example], prior_loss_weight: float) -> torch.Tensor:
    """Per-sample loss weights: `prior_loss_weight` for regularisation images, 1 for training images."""
    return torch.tensor([prior_loss_weight if e.is_reg else 1.0 for e in examples])


class LoraMode:
    """kohya's train_network: one stage over the dataset (training images, and regularisation images when
    data.reg_data_dir is set)."""

    uses_dataset = True
    uses_images = True

    def __init__(self, run: Run) -> None:
        from ..config.plan import build_plan

        self.run = run
        run.attach(run.cfg.network, weights=run.cfg.network.network_weights)
        self.plan = build_plan(run.cfg, run.dataset, run.parts)

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
        run.encoder.prefill(dataset.examples, cfg.train.train_batch_size, run.events.on_cache)
        validate = (lambda: held_out_loss(task, run.encoder, dataset.validation, cfg.train.train_batch_size)) \
            if dataset.validation else None
        yield Stage(
            cfg=cfg, task=task, groups=groups, steps=s.total_steps, steps_per_epoch=s.steps_per_epoch,
            output_name=cfg.output.output_name, warmup_steps=s.warmup_steps, text_encoder_stop=s.text_encoder_stop,
            validate=validate, num_images=len(dataset.train), tag_frequency=dataset.tag_frequency,
            resolution=cfg.data.max_size,
        )
