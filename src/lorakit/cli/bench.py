"""`lorakit bench`: a LoRA rendered at several weights × seeds × prompts, into grids, metrics and one page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .main import app

console = Console()


def numbers(text: str | None, kind: type, option: str) -> list | None:
    """A comma-separated option as numbers (None when not given)."""
    if text is None:
        return None
    try:
        return [kind(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        from ..errors import ConfigError

        raise ConfigError([f"{option} {text!r}: a comma-separated list of numbers, e.g. 0,0.5,1"]) from None


def prompt_texts(prompt: list[str], prompts: Path | None) -> list[str]:
    """--prompt values, then the --prompts file's lines (# comments and blank lines skipped)."""
    from ..errors import ConfigError

    texts = list(prompt)
    if prompts is not None:
        if not prompts.is_file():
            raise ConfigError([f"--prompts {prompts}: no such file"])
        lines = prompts.read_text(encoding="utf-8").splitlines()
        texts += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return texts


def show_result(result, images: int) -> None:
    for line in result.summary:
        console.print(f"[cyan]summary[/] {escape(line)}")
    console.print(f"[green]done[/] {images} images → {escape(str(result.index))}")


@app.command("bench")
def bench_command(
    lora: Annotated[Path, typer.Option("--lora", help="The LoRA .safetensors file (or PEFT folder) to bench.")],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Base model: folder, .safetensors, "
                                                 "tiny-sd1 / … (default: the run's, for a LoRA in a run "
                                                 "folder).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="A TOML file whose [bench] section "
                                                   "sets the bench (default: the run's config.toml, for a LoRA "
                                                   "in a run folder). Options below override it.")] = None,
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="A prompt (repeatable).")] = [],
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="A text file: one prompt per line "
                                                    "(# comments and blank lines skipped).")] = None,
    weights: Annotated[Optional[str], typer.Option("--weights", help="LoRA weights, comma-separated; 0 = the base "
                                                   "model (default: 0,0.4,0.6,0.8,1.0).")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Seeds, comma-separated "
                                                 "(default: 123456789,987654321).")] = None,
    negative: Annotated[Optional[str], typer.Option("--negative", help="Negative prompt.")] = None,
    sampler: Annotated[Optional[str], typer.Option("--sampler", help="euler, euler_ancestral, dpmpp_2m, ddim "
                                                   "(ComfyUI's names) or A1111's ('Euler a', 'DPM++ 2M Karras'); "
                                                   "comfyui: any ComfyUI sampler (default: euler, or the "
                                                   "workflow's).")] = None,
    scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="normal or karras (default: normal, or "
                                                     "the workflow's).")] = None,
    steps: Annotated[Optional[int], typer.Option("--steps", help="Inference steps (default: 20, or the "
                                                 "workflow's).")] = None,
    cfg: Annotated[Optional[float], typer.Option("--cfg", help="Guidance scale (default: 7, or the "
                                                 "workflow's).")] = None,
    width: Annotated[Optional[int], typer.Option("--width", help="Width (default: the model's or the "
                                                 "workflow's).")] = None,
    height: Annotated[Optional[int], typer.Option("--height", help="Height (default: as width).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per prompt, seed and weight "
                                                      "(default: 1).")] = None,
    train_images: Annotated[Optional[Path], typer.Option("--train-images", help="The training images: adds "
                                                         "similarity to them (default: the run's, for a LoRA in "
                                                         "a run folder).")] = None,
    embedding_model: Annotated[Optional[Path], typer.Option("--embedding-model", help="A local CLIP or DINOv2 "
                                                            "folder: adds image-embedding similarity to the "
                                                            "training images.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Bench folder (default: runs/<id>/bench/ for "
                                                "a LoRA in a run folder, else bench/ beside it; never "
                                                "overwritten).")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="builtin (diffusers in lorakit) or comfyui "
                                                   "(a running ComfyUI) (default: builtin).")] = None,
    comfy_url: Annotated[Optional[str], typer.Option("--comfy-url", help="ComfyUI's address "
                                                     "(default: http://127.0.0.1:8188).")] = None,
    workflow: Annotated[Optional[Path], typer.Option("--workflow", help="API-format ComfyUI workflow (backend "
                                                     "comfyui).")] = None,
    lora_install_dir: Annotated[Optional[Path], typer.Option("--lora-install-dir", help="ComfyUI's models/loras "
                                                             "folder: the LoRA is copied there under a name from "
                                                             "its content (backend comfyui).")] = None,
) -> None:
    """Render a LoRA at several weights and seeds, then write comparison grids (weights across), metrics.csv and an
    index.html that shows the grids, a summary, the metrics and the training loss."""
    from ..bench.configure import run_config, with_overrides
    from ..config.loader import load_config
    from ..config.schema import LorakitConfig
    from ..errors import ConfigError

    if not lora.exists():
        raise ConfigError([f"--lora {lora}: no such file"])
    run_cfg = run_config(lora)
    base = load_config([config]) if config is not None else run_cfg or LorakitConfig()
    section = with_overrides(
        base.bench, weights=numbers(weights, float, "--weights"), seeds=numbers(seeds, int, "--seeds"),
        prompts=prompt_texts(prompt, prompts) or None, negative_prompt=negative, sampler=sampler,
        scheduler=scheduler, steps=steps, cfg=cfg, width=width, height=height, batch_size=batch_size,
        backend=backend, comfy_url=comfy_url, workflow=str(workflow) if workflow else None,
        lora_install_dir=str(lora_install_dir) if lora_install_dir else None,
        embedding_model=str(embedding_model) if embedding_model else None)
    model = model or (run_cfg.model.pretrained_model_name_or_path if run_cfg else None)
    if model is None and section.backend == "builtin":
        raise ConfigError(["--model: which base model to render with (the LoRA is not in a run folder with a "
                           "config.toml to take it from)"])
    if train_images is not None and not train_images.is_dir():
        raise ConfigError([f"--train-images {train_images}: no such folder"])
    run_images = Path(run_cfg.data.train_data_dir) if run_cfg and run_cfg.data.train_data_dir else None
    train_dir = train_images or (run_images if section.compare_training_images else None)
    run_bench_section(section, lora, model or "", run_cfg or base, train_dir, out)


def run_bench_section(section, lora: Path, model: str, config, train_dir: Path | None, out: Path | None = None):
    """What `lorakit bench` and `lorakit pipeline` share: the plan from the [bench] section, a progress bar, the
    summary. `train_dir`: the training images to compare with (None: no comparison)."""
    from rich.progress import Progress

    from .. import api
    from ..bench.configure import plan_from_section, run_prompts
    from ..bench.sweep import ComfyTarget
    from ..errors import ConfigError

    plan = plan_from_section(section, lora, model, run_prompts(config))
    comfy = ComfyTarget(section.comfy_url, Path(section.lora_install_dir) if section.lora_install_dir else None)
    train = train_dir if train_dir is not None and train_dir.is_dir() else None
    if section.embedding_model and train is None:
        raise ConfigError([f"bench.embedding_model {section.embedding_model}: embedding similarity compares with "
                           "the training images, and there are none here"],
                          "pass --train-images, or leave the embedding model out")
    embedding = Path(section.embedding_model) if section.embedding_model else None
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"rendering ({section.backend})", total=len(plan.images()))
        result = api.bench(plan, out, train, lambda done, total: bar.update(task, completed=done), comfy, embedding)
    show_result(result, len(plan.images()) * plan.batch_size)
    return result
