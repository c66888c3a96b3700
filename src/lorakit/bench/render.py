"""The built-in renderer: the base model loaded once for the whole sweep, the LoRA loaded once and its weight
changed between images; weight 0 renders with the LoRA switched off, so it is the base model's image. A DoRA is
merged into the weights (as `lorakit generate` applies it), so its images are rendered grouped by weight: the
original weights restored and the DoRA merged once per distinct weight, weight 0 being the restored originals."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from ..config.schema import ModelSection
from .grid import save_png
from .plan import BenchPlan, diffusers_scheduler

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Rendered:
    """One bench image: where it sits in the plan and its file."""

    prompt: int
    seed: int
    weight: float
    path: Path
    batch: int = 0  # which image of the batch (plan.batch_size images per prompt, seed and weight)


def image_name(prompt: int, seed: int, weight: float, batch: int = 0) -> str:
    return f"p{prompt:02d}_s{seed}_w{weight:g}" + (f"_b{batch}" if batch else "") + ".png"


def render_plan(plan: BenchPlan, images_dir: Path, progress: Progress | None = None) -> list[Rendered]:
    """Render every image of `plan` into `images_dir` (created; existing files are never overwritten); a batch of
    `plan.batch_size` images comes from one generator seeded with the image's seed, as one diffusers call."""
    import torch

    from ..families import load_model
    from ..generate import LORA_ADAPTER, apply_lora, attach_dora

    parts = load_model(ModelSection(pretrained_model_name_or_path=plan.model))
    pipe = parts.pipeline
    pipe.scheduler = diffusers_scheduler(plan.sampler, plan.schedule, dict(pipe.scheduler.config))
    lora = Path(plan.lora)
    dora = attach_dora(parts, lora, plan.model) if _is_dora(lora) else None
    if dora is None:
        apply_lora(parts, lora, 1.0, plan.model)
    images_dir.mkdir(parents=True, exist_ok=True)
    todo = plan.images()
    order = sorted(range(len(todo)), key=lambda i: todo[i][2]) if dora else range(len(todo))  # stable: plan order
    done: dict[int, list[Rendered]] = {}  # plan index → its batch
    current: float | None = None
    try:
        for index in order:
            prompt, seed, weight = todo[index]
            if dora is not None:
                if weight != current:
                    dora.set_weight(weight)
                    current = weight
            elif weight == 0:
                pipe.disable_lora()  # exactly the base model
            else:
                pipe.enable_lora()
                pipe.set_adapters([LORA_ADAPTER], adapter_weights=[weight])
            out = pipe(prompt=plan.prompts[prompt], negative_prompt=plan.negative_prompt or None,
                       num_inference_steps=plan.steps, guidance_scale=plan.cfg, width=plan.width or parts.resolution,
                       height=plan.height or parts.resolution, num_images_per_prompt=plan.batch_size,
                       generator=torch.Generator(device="cpu").manual_seed(seed))
            done[index] = [Rendered(prompt, seed, weight, save_png(image, images_dir / image_name(
                prompt, seed, weight, batch)), batch) for batch, image in enumerate(out.images)]
            if progress:
                progress(len(done), len(todo))
    finally:
        if dora is not None:
            dora.restore()  # the model as loaded
    if dora is None:
        pipe.enable_lora()
    return [r for i in range(len(todo)) for r in done[i]]


def _is_dora(lora: Path) -> bool:
    if not lora.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as f:
        return any(k.endswith(".dora_scale") for k in f.keys())


def open_image(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")
