"""`lorakit bench`: a LoRA rendered at several weights × seeds × prompts, into grids, metrics and one page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .main import app

console = Console()


def _numbers(text: str, kind: type, option: str) -> list:
    try:
        return [kind(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        from ..errors import ConfigError

        raise ConfigError([f"{option} {text!r}: a comma-separated list of numbers, e.g. 0,0.5,1"]) from None


@app.command("bench")
def bench_command(
    lora: Annotated[Path, typer.Option("--lora", help="The LoRA .safetensors file (or PEFT folder) to bench.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Base model: folder, .safetensors, tiny-sd1 / …")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="A prompt (repeatable).")] = [],
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="A text file: one prompt per line "
                                                    "(# comments and blank lines skipped).")] = None,
    weights: Annotated[str, typer.Option("--weights", help="LoRA weights, comma-separated; 0 = the base "
                                         "model.")] = "0,0.4,0.6,0.8,1.0",
    seeds: Annotated[str, typer.Option("--seeds", help="Seeds, comma-separated.")] = "1,2",
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    sampler: Annotated[str, typer.Option("--sampler", help="euler, euler_ancestral, dpmpp_2m, ddim (ComfyUI's "
                                         "names) or A1111's ('Euler a', 'DPM++ 2M Karras').")] = "euler",
    scheduler: Annotated[str, typer.Option("--scheduler", help="normal or karras (ComfyUI's scheduler).")] = "normal",
    steps: Annotated[int, typer.Option("--steps", help="Inference steps.")] = 20,
    cfg: Annotated[float, typer.Option("--cfg", help="Classifier-free guidance scale.")] = 7.0,
    width: Annotated[Optional[int], typer.Option("--width", help="Width (default: the model's).")] = None,
    height: Annotated[Optional[int], typer.Option("--height", help="Height (default: the model's).")] = None,
    train_images: Annotated[Optional[Path], typer.Option("--train-images", help="The training images: adds the "
                                                         "colour-histogram distance to them.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Bench folder (default: runs/<id>/bench/ for "
                                                "a LoRA in a run folder, else bench/ beside it; never "
                                                "overwritten).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="builtin (diffusers) or comfyui.")] = "builtin",
) -> None:
    """Render a LoRA at several weights and seeds, then write comparison grids (weights across), metrics.csv and an
    index.html that shows the grids, a summary, the metrics and the training loss."""
    from rich.progress import Progress

    from .. import api
    from ..bench.plan import BenchPlan
    from ..errors import ConfigError

    if backend != "builtin":
        raise ConfigError([f"--backend {backend!r}: the ComfyUI backend is not implemented yet (its workflow patching "
                           "and client exist; the live run does not)"], "use --backend builtin")
    texts = list(prompt)
    if prompts is not None:
        if not prompts.is_file():
            raise ConfigError([f"--prompts {prompts}: no such file"])
        lines = prompts.read_text(encoding="utf-8").splitlines()
        texts += [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not texts:
        raise ConfigError(["no prompt: pass --prompt TEXT (repeatable) or --prompts FILE"])
    plan = BenchPlan(prompts=texts, seeds=_numbers(seeds, int, "--seeds"),
                     weights=_numbers(weights, float, "--weights"), sampler=sampler, schedule=scheduler, steps=steps,
                     cfg=cfg, width=width, height=height, negative_prompt=negative, lora=str(lora), model=model)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("rendering", total=len(plan.images()))
        result = api.bench(plan, out, train_images, lambda done, total: bar.update(task, completed=done))
    for line in result.summary:
        console.print(f"[cyan]summary[/] {escape(line)}")
    console.print(f"[green]done[/] {len(plan.images())} images → {escape(str(result.index))}")
