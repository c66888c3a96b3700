"""`lorakit pipeline`: prepare a raw set, train, bench, in one command (thin over lorakit.pipeline)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .bench import numbers
from .main import app
from .options import ConfigFiles, SetValues

console = Console(soft_wrap=True)


class ConsoleReporter:
    def stage(self, name: str, detail: str) -> None:
        console.rule(f"[bold]{name}[/] {escape(detail)}".rstrip(), align="left")

    def note(self, message: str) -> None:
        console.print(escape(message), highlight=False)

    def confirm(self, question: str) -> bool:
        if not sys.stdin.isatty():
            return False
        return typer.confirm(question, default=False)


@app.command()
def pipeline(
    raw_set: Annotated[str, typer.Option("--raw-set", help="The set's folder name under datasets/raw/style/ "
                                         "(--profile style) or datasets/raw/characters/ (char).")],
    profile: Annotated[str, typer.Option("--profile", help="style or char: the raw folder and the preset "
                                         "(sd15-style / sd15-character).")] = "style",
    run_id: Annotated[Optional[str], typer.Option("--run-id", help="The run folder's name under runs/ "
                                                  "(default: the time, YYYYMMDD_HHMMSS).")] = None,
    root: Annotated[Path, typer.Option("--root", help="The folder holding datasets/ and runs/.")] = Path("."),
    resize: Annotated[bool, typer.Option("--resize", help="Prepare the raw set first (upright RGB PNGs, long side "
                                         "≤ --max-side, bad and duplicate images set aside) into "
                                         "datasets/normalized/.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Update an existing normalized set without "
                                      "asking.")] = False,
    max_side: Annotated[int, typer.Option("--max-side", min=64, help="Shrink images with a longer side "
                                          "(--resize).")] = 1024,
    min_side: Annotated[int, typer.Option("--min-side", min=1, help="Reject images with a shorter side "
                                          "(--resize).")] = 256,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Training preset instead of the "
                                                  "profile's.")] = None,
    config: ConfigFiles = [],
    set_: SetValues = [],
    weights: Annotated[Optional[str], typer.Option("--weights", help="Bench LoRA weights, comma-separated "
                                                   "(default: the config's bench section).")] = None,
    seeds: Annotated[Optional[str], typer.Option("--seeds", help="Bench seeds, comma-separated.")] = None,
    positive: Annotated[Optional[str], typer.Option("--positive", help="The bench prompt (replaces the "
                                                    "workflow's or the config's).")] = None,
    negative: Annotated[Optional[str], typer.Option("--negative", help="The bench negative prompt.")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Bench images per seed and "
                                                      "weight.")] = None,
    backend: Annotated[Optional[str], typer.Option("--backend", help="builtin or comfyui.")] = None,
    comfy_url: Annotated[Optional[str], typer.Option("--comfy-url", help="ComfyUI's address.")] = None,
    workflow: Annotated[Optional[Path], typer.Option("--workflow", "--bench-workflow", help="API-format ComfyUI "
                                                     "workflow (backend comfyui).")] = None,
    lora_install_dir: Annotated[Optional[Path], typer.Option("--lora-install-dir", help="ComfyUI's models/loras "
                                                             "folder (backend comfyui).")] = None,
    skip_train: Annotated[bool, typer.Option("--skip-train", help="Bench the LoRA of an earlier run "
                                             "(--run-id).")] = False,
    skip_bench: Annotated[bool, typer.Option("--skip-bench", help="Prepare and train only.")] = False,
    fix_owner: Annotated[bool, typer.Option("--fix-owner", help="Run as root with sudo: give datasets/ and the "
                                            "run folder back to the invoking user at the end.")] = False,
) -> None:
    """Raw images to a benched LoRA: prepare (--resize), train, then bench the LoRA at several weights and seeds
    into runs/<run_id>/bench/index.html. Each stage writes into runs/<run_id>/; a failing stage stops the
    pipeline and keeps what the earlier ones made."""
    from .. import api
    from ..data.preprocess import PrepareOptions
    from ..engine.events import Commands, RichProgress
    from ..engine.signals import stop_on_signals
    from ..pipeline import PipelineRequest, run_pipeline
    from .bench import run_bench_section
    from .data import print_report

    overrides = {"weights": numbers(weights, float, "--weights"), "seeds": numbers(seeds, int, "--seeds"),
                 "prompts": [positive] if positive else None, "negative_prompt": negative,
                 "batch_size": batch_size, "backend": backend, "comfy_url": comfy_url,
                 "workflow": str(workflow.resolve()) if workflow else None,
                 "lora_install_dir": str(lora_install_dir.resolve()) if lora_install_dir else None}
    req = PipelineRequest(raw_set=raw_set, profile=profile, run_id=run_id, root=root, resize=resize, yes=yes,
                          max_side=max_side, min_side=min_side, preset=preset, configs=list(config),
                          sets=list(set_), bench={k: v for k, v in overrides.items() if v is not None},
                          skip_train=skip_train, skip_bench=skip_bench, fix_owner=fix_owner)

    def prepare(r: PipelineRequest):
        report = api.prepare(r.raw_dir, r.normalized_dir, PrepareOptions(max_side=r.max_side, min_side=r.min_side))
        print_report(report)
        return report

    commands = Commands()

    def train(resolved, run_dir: Path):
        with stop_on_signals(commands):
            return api.train(resolved, [RichProgress(console)], commands, run_dir=run_dir)

    result = run_pipeline(req, ConsoleReporter(), prepare, train, run_bench_section)
    console.print(f"[green]done[/] {escape(str(result.run_dir))}"
                  + (f" → open {escape(str(result.bench_index))}" if result.bench_index else ""))
