"""`lorakit estimate`: peak GPU memory and time per step of a config, before anything is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .main import app
from .options import AddFiles, ConfigFiles, PresetName, SetValues, resolve_options

Files = Annotated[list[Path], typer.Argument(help="Config TOML files (same as --config; later files win).")]
GIB = 2**30
CALIBRATION = ("Not calibrated against real runs yet: the activations are measured on the meta device and the "
               "time assumes the MFU named above; see docs/estimate.md for the model and its limits.")


@app.command("estimate")
def estimate_command(
    files: Files = [],
    config: ConfigFiles = [],
    add: AddFiles = [],
    preset: PresetName = None,
    set_: SetValues = [],
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="GPU to estimate for (H100, A100, L4, 4090, 3060, "
                                               "T4, M2 Max, …); default: this machine's.")] = None,
    vram: Annotated[Optional[float], typer.Option("--vram", help="GPU memory in GiB (what a '24 GB' card has); "
                                                  "default: the detected GPU's, else the named GPU's.")] = None,
) -> None:
    """Estimate peak GPU memory (per component) and time per step of a run, and what train.auto_memory would
    change to fit; no weights are read (the model's architecture is built on the meta device)."""
    from ..engine import estimate as est

    resolved = resolve_options([*files, *config], add, preset, set_, machine="warn")
    cfg = resolved.config
    chosen = est.find_gpu(gpu) if gpu else est.detected_gpu()
    memory = int(vram * est.GIB) if vram else (None if gpu else est.detected_vram())
    if memory is None and chosen is not None and chosen.memory_gib:
        memory = int(chosen.memory_gib * est.GIB)
    result = est.estimate(cfg, chosen, _cached_items(cfg))
    console = Console(highlight=False, soft_wrap=True)
    console.print(_table(result))
    for line in _summary(result, memory):
        console.print(escape(line))
    if memory is not None:
        _, changes = est.fit_to_memory(cfg, memory, chosen)
        state = "on" if cfg.train.auto_memory else "off"
        if changes:
            console.print(escape(f"train.auto_memory ({state}) would change:"))
            for line in changes:
                console.print(escape(f"  {line}"))
        else:
            console.print(escape(f"train.auto_memory ({state}): nothing to change, the run fits"))
    for note in result.notes:
        console.print(escape(f"note: {note}"))
    console.print(f"[dim]{escape(CALIBRATION)}[/]")


def _table(result) -> Table:
    """Component → GiB at the training step's peak."""
    s = result.setup
    title = (f"{result.model_name}: {s.width}×{s.height}, batch {s.batch} × {s.accumulation}, compute {s.compute}, "
             f"model {s.model}{' + fp8' if s.fp8 else ''}, network {s.lora}")
    table = Table(title=title, title_justify="left")
    table.add_column("component")
    table.add_column("GiB", justify="right")
    for name, size in result.parts:
        table.add_row(escape(name), f"{size / GIB:.2f}")
    table.add_row("[bold]training step peak[/]", f"[bold]{sum(b for _, b in result.parts) / GIB:.2f}[/]")
    return table


def _summary(result, memory: int | None) -> list[str]:
    """Caching phase, overall peak against the memory, time per step and images per second."""
    lines = []
    if result.caching_peak:
        lines.append(f"caching phase (VAE and text encoders on the GPU, the UNet not yet): "
                     f"{result.caching_peak / GIB:.2f} GiB")
    where = f" of {memory / GIB:.1f} GiB" if memory else ""
    gpu = result.gpu.name if result.gpu else "no GPU named"
    lines.append(f"peak: ~{result.peak / GIB:.1f} GiB{where} ({gpu})")
    lines.append(f"model FLOPs per image: {result.model_flops_per_image / 1e12:.2f} TFLOP (UNet forward + backward, "
                 f"no recompute); per optimizer step the GPU computes {result.step_flops / 1e12:.2f} TFLOP")
    if result.seconds_per_step is not None:
        lines.append(f"time: ~{result.seconds_per_step:.3g} s/step, ~{result.images_per_second:.3g} images/s")
    return lines


def _cached_items(cfg) -> tuple[int, int] | None:
    """(images, captions) the run would cache on the GPU, when the data folder can be scanned here; else None."""
    from ..data.pipeline import build_dataset
    from ..errors import LorakitError

    try:
        dataset = build_dataset(cfg.data, cfg.train.train_batch_size, cfg.train.seed, fingerprints=False)
    except (LorakitError, OSError, ValueError):
        return None
    examples = dataset.examples
    return len({e.key for e in examples}), len({e.caption for e in examples})
