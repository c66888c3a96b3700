"""The built-in renderer: the base model loaded once for the whole sweep, the LoRA loaded once and its weight
changed between images; weight 0 renders with the LoRA switched off, so it is the base model's image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from ..config.schema import ModelSection
from ..errors import LorakitError
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


def image_name(prompt: int, seed: int, weight: float) -> str:
    return f"p{prompt:02d}_s{seed}_w{weight:g}.png"


def render_plan(plan: BenchPlan, images_dir: Path, progress: Progress | None = None) -> list[Rendered]:
    """Render every image of `plan` into `images_dir` (created; existing files are never overwritten)."""
    import torch

    from ..families import load_model
    from ..generate import LORA_ADAPTER, apply_lora

    parts = load_model(ModelSection(pretrained_model_name_or_path=plan.model))
    pipe = parts.pipeline
    pipe.scheduler = diffusers_scheduler(plan.sampler, plan.schedule, dict(pipe.scheduler.config))
    lora = Path(plan.lora)
    if _is_dora(lora):  # applied by merging into the base weights: a weight change would need a reload
        raise LorakitError(f"{lora}: a DoRA network; benching DoRA is not implemented yet",
                           "render it at one weight with `lorakit generate --lora … --weight W`")
    apply_lora(parts, lora, 1.0, plan.model)
    images_dir.mkdir(parents=True, exist_ok=True)
    done: list[Rendered] = []
    todo = plan.images()
    for prompt, seed, weight in todo:
        if weight == 0:
            pipe.disable_lora()  # exactly the base model
        else:
            pipe.enable_lora()
            pipe.set_adapters([LORA_ADAPTER], adapter_weights=[weight])
        out = pipe(prompt=plan.prompts[prompt], negative_prompt=plan.negative_prompt or None,
                   num_inference_steps=plan.steps, guidance_scale=plan.cfg, width=plan.width or parts.resolution,
                   height=plan.height or parts.resolution,
                   generator=torch.Generator(device="cpu").manual_seed(seed))
        path = save_png(out.images[0], images_dir / image_name(prompt, seed, weight))
        done.append(Rendered(prompt, seed, weight, path))
        if progress:
            progress(len(done), len(todo))
    pipe.enable_lora()
    return done


def _is_dora(lora: Path) -> bool:
    if not lora.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(lora), "pt") as f:
        return any(k.endswith(".dora_scale") for k in f.keys())


def open_image(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")
