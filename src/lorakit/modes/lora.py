"""Plain LoRA mode: denoising loss on captioned images; the network (LoRA, LoCon, LoHa, LoKr, DoRA) on the UNet
and optionally the text encoders."""

from __future__ import annotations

from typing import Any

import torch

from ..config.schema import LorakitConfig
from ..data.example import Example
from ..engine.encode import BatchEncoder, size_conditioning
from ..engine.loss import add_noise, diffusion_loss, target_for
from ..families import ModelParts
from ..networks.attach import attach_network, network_parameters
from ..networks.targets import select_targets


class LoraMode:
    """The standard LoRA mode (kohya's train_network)."""

    def __init__(self, parts: ModelParts, cfg: LorakitConfig, encoder: BatchEncoder) -> None:
        self.parts, self.cfg, self.encoder = parts, cfg, encoder
        attach_network(parts, cfg.network, select_targets(parts, cfg.network).components())
        self.text_frozen = False

    def param_groups(self) -> list[dict[str, Any]]:
        t = self.cfg.train
        groups = [{"params": network_parameters(self.parts.unet), "lr": t.learning_rate}]
        if self.cfg.network.train_text_encoder:
            te_lr = t.text_encoder_lr if t.text_encoder_lr is not None else t.learning_rate
            params = [p for te in self.parts.text_encoders for p in network_parameters(te)]
            groups.append({"params": params, "lr": te_lr})
        for g in groups:
            if g["lr"] == 0:  # a rate of 0 trains nothing: no gradients computed or kept for it
                for p in g["params"]:
                    p.requires_grad_(False)
        return [g for g in groups if g["params"] and g["lr"] > 0]

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
        return diffusion_loss(pred, target_for(sched, latents, noise, timesteps), sched, timesteps, t.min_snr_gamma)
