"""A bench plan from a config's [bench] section: the values left unset come from the run or the workflow.

Unset sampling settings are lorakit's defaults with the built-in renderer and the workflow's own with ComfyUI, so a
workflow tuned in ComfyUI renders as it was tuned unless the config or the command line says otherwise. Prompts come
from [bench] prompts, else the workflow's positive prompt (comfyui), else the [sample] prompts, else the first
training caption.
"""

from __future__ import annotations

from pathlib import Path

from ..config.schema import BenchSection, LorakitConfig
from ..errors import ConfigError
from .plan import BenchPlan

BUILTIN_DEFAULTS = {"sampler": "euler", "schedule": "normal", "steps": 20, "cfg": 7.0, "negative_prompt": ""}
SECTION_TO_PLAN = {"sampler": "sampler", "scheduler": "schedule", "steps": "steps", "cfg": "cfg",
                   "negative_prompt": "negative_prompt", "width": "width", "height": "height"}


def plan_from_section(bench: BenchSection, lora: Path, model: str, fallback_prompts: list[str] = ()) -> BenchPlan:
    """The plan for `lora` on `model` (builtin) or on the workflow's checkpoint (comfyui)."""
    settings: dict = dict(BUILTIN_DEFAULTS)
    if bench.backend == "comfyui":
        from . import comfyui
        from .comfyui_render import workflow_settings

        settings = workflow_settings(comfyui.load_workflow(bench.workflow))
        model = settings.pop("model", "") or model
    workflow_prompt = settings.pop("prompt", None)
    for key, name in SECTION_TO_PLAN.items():
        if getattr(bench, key) is not None:
            settings[name] = getattr(bench, key)
    prompts = list(bench.prompts) or ([workflow_prompt] if workflow_prompt else []) or list(fallback_prompts)
    if not prompts:
        raise ConfigError(["bench.prompts is empty and there is nothing to take prompts from (no [sample] prompts "
                           "or training captions)"], "set bench.prompts, or pass --prompt")
    return BenchPlan(prompts=prompts, seeds=list(bench.seeds), weights=list(bench.weights), lora=str(lora),
                     model=model, batch_size=bench.batch_size, backend=bench.backend,
                     workflow=str(Path(bench.workflow).resolve()) if bench.workflow else "", **settings)


def run_prompts(config: LorakitConfig) -> list[str]:
    """A trained run's prompts for the bench: its [sample] prompts (without kohya's --options; a line that does not
    parse is left out), else the first caption of its training images."""
    from ..engine.sample_prompts import PromptError, parse_line, prompt_lines

    try:
        lines = prompt_lines(config.sample.prompts, config.sample.prompts_file)
    except (PromptError, OSError):
        lines = []
    prompts = []
    for _, text in lines:
        try:
            prompts.append(parse_line(text)["prompt"])
        except PromptError:
            continue
    return prompts or first_caption(config)


def first_caption(config: LorakitConfig) -> list[str]:
    """The first line of the first training image's caption file (images in name order), as training reads it."""
    from .sweep import training_images

    if not config.data.train_data_dir:
        return []
    for image in training_images(Path(config.data.train_data_dir)):
        caption = image.with_suffix(config.data.caption_extension)
        if image.name.startswith(".") or not caption.is_file():
            continue
        text = caption.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return [text.splitlines()[0]]
    return []


def run_config(lora: Path) -> LorakitConfig | None:
    """The config snapshot of the run whose train/ folder holds `lora` (runs/<id>/config.toml), if any."""
    snapshot = lora.resolve().parent.parent / "config.toml"
    if lora.resolve().parent.name != "train" or not snapshot.is_file():
        return None
    from ..config.loader import load_config

    return load_config([snapshot])


def with_overrides(bench: BenchSection, **overrides: object) -> BenchSection:
    """`bench` with the given values (None = keep), validated as a whole (e.g. comfyui needs a workflow)."""
    from pydantic import ValidationError

    try:
        return BenchSection.model_validate({**bench.model_dump(), **{k: v for k, v in overrides.items()
                                                                      if v is not None}})
    except ValidationError as exc:
        raise ConfigError([f"bench.{'.'.join(map(str, e['loc'])) or 'section'}: {e['msg']}"
                           for e in exc.errors()]) from None
