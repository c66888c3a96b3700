"""iLECO: edit a concept from prompts alone (TrainTrain's instant LECO), with LECO's erase term when asked.

Each batch element is one edit at a fresh pure-noise latent x ~ N(0, I) and a uniform timestep t; nothing is
denoised or noised. The base model (the adapter off) gives the target

    y = eps0(x, t, c_target) - g * (eps0(x, t, c_original) - eps0(x, t, c("")))

and the adapted UNet learns to predict y for the original prompt: loss = MSE(eps(x, t, c_original), y), per sample
with the min-SNR weight when set. g = 0 is TrainTrain's iLECO (one frozen forward); g > 0 is LECO's erase / ESD's
negative guidance; g < 0 is LECO's enhance. See docs/modes.md.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch

from ..config.schema import IlecoModeSection, LorakitConfig
from ..engine.loss import diffusion_loss
from ..engine.mode import Stage
from ..engine.speed import unet_input
from ..families import ModelParts
from ..networks.registry import ADAPTER

if TYPE_CHECKING:
    from ..engine.trainer import Run

EMPTY = ""  # the unconditional prompt: an erase's target and the reference of the guidance term


@dataclass(frozen=True)
class Edit:
    """One prompt pair with its guidance resolved: the UNet learns `original` to mean `target` (g: erase term)."""

    original: str
    target: str
    guidance: float


def edits(mode: IlecoModeSection) -> list[Edit]:
    """The run's edits, in config order; a pair without its own guidance_scale takes the section's."""
    return [Edit(p.original_prompt, p.target_prompt,
                 mode.guidance_scale if p.guidance_scale is None else p.guidance_scale) for p in mode.pairs()]


class EditSampler:
    """Batches of `batch_size` edits, cycling through them in order: batch k of the run holds edits
    k·B, k·B+1, … (mod the number of edits). An epoch is ceil(edits / B) optimizer steps of `accumulation`
    batches each, so it covers every edit and the loop never cuts an accumulation window short."""

    def __init__(self, items: list[Edit], batch_size: int, accumulation: int = 1) -> None:
        self.items, self.batch_size, self.accumulation = items, batch_size, accumulation

    def __len__(self) -> int:
        return math.ceil(len(self.items) / self.batch_size) * self.accumulation

    def batches(self, epoch: int) -> Iterator[list[Edit]]:
        n, b = len(self.items), self.batch_size
        first = (epoch - 1) * len(self)
        for k in range(first, first + len(self)):
            yield [self.items[(k * b + j) % n] for j in range(b)]


def encode_prompts(encode: Callable[[list[str]], dict[str, torch.Tensor]], prompts: list[str]
                   ) -> dict[str, dict[str, torch.Tensor]]:
    """Text conditioning of each distinct prompt, once (the text encoders are frozen in this mode)."""
    unique = list(dict.fromkeys(prompts))
    with torch.no_grad():
        out = encode(unique)
    return {p: {k: v[i] for k, v in out.items()} for i, p in enumerate(unique)}


class IlecoTask:
    """The iLECO loss on batches of edits. `base_model()` is a context in which the UNet is the frozen base model
    (the trained adapter off)."""

    def __init__(self, parts: ModelParts, cfg: LorakitConfig, sampler: EditSampler,
                 conds: dict[str, dict[str, torch.Tensor]],
                 base_model: Callable[[], AbstractContextManager[Any]] = nullcontext,
                 dtype: torch.dtype = torch.float32) -> None:
        self.parts, self.cfg, self.sampler, self.conds = parts, cfg, sampler, conds
        self.base_model, self.dtype = base_model, dtype
        width, height = cfg.data.max_size
        scale = getattr(parts.pipeline, "vae_scale_factor", 8)  # 8 also when the VAE is not loaded
        self.latent_shape = (parts.unet.config.in_channels, height // scale, width // scale)
        # SDXL's micro-conditioning: a full, uncropped image of the training size
        self.size = {"original_size": (height, width), "crop_top_left": (0, 0), "target_size": (height, width)}

    def freeze_text_encoders(self) -> None:
        """Nothing to do: the text encoders never train here."""

    def train(self, on: bool) -> None:
        self.parts.unet.train(on)

    def predict(self, x: torch.Tensor, t: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """The UNet's output (noise or velocity, as the model predicts) for each latent with its prompt."""
        cond = {k: torch.stack([self.conds[p][k] for p in prompts]) for k in self.conds[prompts[0]]}
        kwargs = self.parts.family.unet_kwargs(cond, [self.size] * len(prompts))
        return self.parts.unet(unet_input(x, self.cfg.train), t, **kwargs).sample

    @torch.no_grad()
    def target(self, batch: list[Edit], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """y_b = eps0(x_b, t_b, target) - g_b * (eps0(x_b, t_b, original) - eps0(x_b, t_b, "")), from the base
        model in one forward over the distinct (element, prompt) rows; only the target's when every g is 0."""
        rows: dict[tuple[int, str], int] = {}
        for b, e in enumerate(batch):
            for prompt in (e.target, e.original, EMPTY) if e.guidance else (e.target,):
                rows.setdefault((b, prompt), len(rows))
        index = torch.tensor([b for b, _ in rows], device=x.device)
        with self.base_model():
            eps = self.predict(x[index], t[index], [p for _, p in rows])

        def at(b: int, prompt: str) -> torch.Tensor:
            return eps[rows[(b, prompt)]]

        return torch.stack([at(b, e.target) - e.guidance * (at(b, e.original) - at(b, EMPTY)) if e.guidance
                            else at(b, e.target) for b, e in enumerate(batch)])

    def loss(self, batch: list[Edit], gen: torch.Generator) -> torch.Tensor:
        sched, device = self.parts.noise_scheduler, gen.device
        x = torch.randn((len(batch), *self.latent_shape), generator=gen, device=device, dtype=self.dtype)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(batch),), generator=gen, device=device)
        target = self.target(batch, x, t)
        pred = self.predict(x, t, [e.original for e in batch])
        return diffusion_loss(pred, target, sched, t, self.cfg.train.min_snr_gamma)


class IlecoMode:
    """One stage: a network on the UNet trained on prompt pairs for train.max_train_steps (500 when unset)."""

    uses_dataset = False
    uses_images = False
    data_parallel = False  # one process (training on several: not implemented yet)

    def __init__(self, run: Run) -> None:
        from ..config.plan import stage_steps

        self.run = run
        self.edits = edits(run.cfg.mode)  # type: ignore[arg-type]
        self.steps = sum(steps for _, steps in stage_steps(run.cfg))
        run.attach(run.cfg.network, weights=run.cfg.network.network_weights)  # continue an iLECO LoRA

    def plan_lines(self) -> list[str]:
        from ..config.plan import mode_plan_lines  # the same lines `lorakit plan` shows

        return mode_plan_lines(self.run.cfg, self.run.result.lora_path)

    def _warmup(self) -> int:
        from ..engine.setup import warmup_steps

        return warmup_steps(self.run.cfg.train, self.steps)

    def total_steps(self) -> int:
        return self.steps

    def stages(self) -> Iterator[Stage]:
        run, cfg = self.run, self.run.cfg
        sampler = EditSampler(self.edits, cfg.train.train_batch_size, cfg.train.gradient_accumulation_steps)
        prompts = [p for e in self.edits for p in (e.original, e.target) + ((EMPTY,) if e.guidance else ())]
        conds = encode_prompts(run.encoder.text_conditioning, prompts)
        task = IlecoTask(run.parts, cfg, sampler, conds, lambda: run.adapters({ADAPTER: 0.0}), run.dtype)
        groups = run.param_groups(cfg.train, cfg.network)
        per_epoch = len(sampler) // cfg.train.gradient_accumulation_steps
        yield Stage(cfg=cfg, task=task, groups=groups, steps=self.steps, steps_per_epoch=per_epoch,
                    output_name=cfg.output.output_name, warmup_steps=self._warmup(), num_images=0,
                    resolution=cfg.data.max_size)
