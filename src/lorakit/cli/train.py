"""`lorakit train`, `lorakit generate`, `lorakit demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .main import app
from .options import AddFiles, ConfigFiles, OomLayer, PresetName, SetValues, resolve_options

console = Console(soft_wrap=True)  # paths are printed whole, never wrapped
err_console = Console(stderr=True, soft_wrap=True)


@app.command()
def train(
    config: ConfigFiles = [],
    add: AddFiles = [],
    preset: PresetName = None,
    set_: SetValues = [],
    oom: OomLayer = False,
    strict: bool = typer.Option(False, "--strict", help="Refuse to train (exit 2) when sd-scripts, A1111, ComfyUI "
                                "or diffusers would ignore some adapted module (the plan's warnings)."),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Continue a run exactly where its checkpoint left it: the run folder (runs/<id>, "
        "its newest checkpoint), one of its checkpoints/step-… folders, or auto (the newest checkpoint in "
        "output.output_dir that this config continues). Without --config/--preset the checkpoint's own config is "
        "used (plus --add/--set); changes that would alter the training are refused."),
    events: Optional[Path] = typer.Option(
        None, "--events", help="Also write the progress as JSON lines to this file (start, every step, saves, the "
        "end): what the job queue and the web UI read."),
) -> None:
    """Train a LoRA as the config says; prints the plan first; the result goes to runs/<run_id>/train/.

    Ctrl+C or SIGTERM stops after the current step with a checkpoint and the LoRA saved (exit 4); a second
    Ctrl+C quits at once (exit 130). Exit 5: out of GPU memory, 6: NaN/inf steps (both saved a checkpoint)."""
    from ..engine.distributed import is_main_process
    from ..engine.events import Commands
    from ..errors import EXIT_INTERRUPTED, EXIT_STOPPED, NonFiniteStop

    commands = Commands()
    try:
        result = _train(commands, config, add, preset, set_, oom, strict, resume, events)
    except KeyboardInterrupt:  # the second Ctrl+C (typer would exit 130 silently)
        err_console.print("[bold red]interrupted[/]: quit at once; the last complete checkpoint is kept")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except NonFiniteStop:
        if not is_main_process():  # several processes stopped together: the main one reports and sets the status
            raise typer.Exit(0) from None
        raise
    if not is_main_process():  # a launcher ends the others when one exits non-zero: only the main one may
        return
    try:
        if not result.stopped:
            console.print(f"[green]done[/] {result.steps} steps → {result.lora_path}")
        elif result.checkpoint:
            console.print(f"[yellow]stopped[/] {result.steps} steps → {result.lora_path}\n"
                          f"checkpoint {result.checkpoint}: continue with `lorakit train --resume {result.run_dir}`")
        else:
            console.print(f"[yellow]stopped[/] {result.steps} steps: nothing was trained or saved")
    except OSError:  # stdout gone (a `| tee` ended by the same Ctrl+C): the exit status still tells
        pass
    if result.stopped:
        raise typer.Exit(EXIT_STOPPED)


def _train(commands, config, add, preset, set_, oom, strict, resume, events=None):
    """Resolve the config (the checkpoint's as the base layer when resuming without one) and train, the first
    SIGINT/SIGTERM asking the run to stop after its step."""
    from .. import api
    from ..engine.events import RichProgress
    from ..engine.signals import stop_on_signals

    with stop_on_signals(commands):
        checkpoint = None
        if resume and not (config or preset):  # the checkpoint's config is the base layer
            checkpoint = api.find_checkpoint(resume, None, _warn)
            resolved = resolve_options([checkpoint / "config.toml"], add, None, set_, oom, check_paths=True)
        else:
            resolved = resolve_options(config, add, preset, set_, oom, check_paths=True)
            if resume:
                checkpoint = api.find_checkpoint(resume, resolved.config, _warn)
        watchers = [RichProgress(console)]
        if events is not None:
            from ..engine.events import JsonLinesEvents

            watchers.append(JsonLinesEvents(events))
        return api.train(resolved, watchers, commands, strict=strict, resume=checkpoint)


def _warn(message: str) -> None:
    from rich.markup import escape

    console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)


@app.command()
def generate(
    model: str = typer.Option(..., "--model", "-m", help="Base model: folder, .safetensors file, tiny-sd1 / … or random-sd15 / …"),
    prompt: str = typer.Option(..., "--prompt", "-p", help="Prompt."),
    lora: Optional[Path] = typer.Option(None, "--lora", help="LoRA .safetensors file or PEFT folder."),
    weight: float = typer.Option(1.0, "--weight", "-w", help="LoRA weight (strength)."),
    seed: list[int] = typer.Option([1], "--seed", "-s", help="Seed (repeatable: one image per seed)."),
    negative: str = typer.Option("", "--negative", help="Negative prompt."),
    steps: int = typer.Option(20, "--steps", help="Inference steps."),
    guidance: float = typer.Option(7.0, "--guidance", help="Classifier-free guidance scale."),
    width: Optional[int] = typer.Option(None, "--width", help="Width in pixels (default: the model's)."),
    height: Optional[int] = typer.Option(None, "--height", help="Height in pixels (default: the model's)."),
    family: str = typer.Option("auto", "--family", help="sd1, sd2, sdxl, or auto."),
    out: Path = typer.Option(Path("outputs"), "--out", "-o", help="Folder for the PNGs (never overwritten)."),
) -> None:
    """Render images with or without a LoRA."""
    from .. import api
    from ..errors import ConfigError

    if family not in ("auto", "sd1", "sd2", "sdxl"):
        raise ConfigError([f"--family {family!r}: use auto, sd1, sd2 or sdxl"])
    req = api.GenerateRequest(model=model, prompt=prompt, out_dir=out, lora=lora, weight=weight, seeds=tuple(seed),
                              negative_prompt=negative, steps=steps, guidance_scale=guidance, width=width,
                              height=height, family=family)
    for path in api.generate(req):
        console.print(f"wrote {path}")


@app.command()
def demo(
    workdir: Path = typer.Option(Path("lorakit-demo"), "--workdir", help="Folder for the demo's images and runs."),
    steps: int = typer.Option(40, "--steps", help="Training steps."),
) -> None:
    """Train a LoRA on the built-in tiny model and sample images: no checkpoint or download needed."""
    from ..demo import VISIBLE_CHANGE, run_demo
    from ..engine.events import RichProgress

    result = run_demo(workdir, [RichProgress(console)], steps)
    console.print(f"images        {result.data_dir}")
    console.print(f"run           {result.train.run_dir}")
    console.print(f"LoRA          {result.train.lora_path}")
    console.print(f"training log  {result.train.run_dir / 'train' / 'log.csv'}")
    seen = "visible" if result.visible else f"not visible side by side, below {VISIBLE_CHANGE:g}/255; see the heat map"
    console.print(f"before/after  {result.before_after}  (mean pixel change {result.pixel_change:.1f}/255, {seen})",
                  highlight=False)
    console.print(f"loss curve    {result.loss_curve}", highlight=False)
