"""`lorakit prepare` and `lorakit dataset inspect`: thin wrappers over `lorakit.api` and `lorakit.data`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .. import api
from ..data.preprocess import PrepareOptions, PrepareReport
from ..data.settings import DataSection
from ..data.transforms import parse_color
from ..errors import DataError, some_of
from .main import app
from .options import ConfigFiles, SetValues, resolve_options

console = Console()
dataset_app = typer.Typer(help="Look at a dataset folder the way training will.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
LISTED = 10  # file names listed per folder before "… and N more"


@app.command()
def prepare(
    raw_dir: Path = typer.Argument(..., help="Folder of raw images (read only; never modified)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the normalized images (created if missing)."),
    max_side: Optional[int] = typer.Option(None, "--max-side", min=64, help="Shrink images whose long side is longer."),
    min_side: int = typer.Option(256, "--min-side", min=1, help="Reject images whose short side is shorter."),
    background: str = typer.Option("white", "--background", help="Colour under transparent pixels (name or #rrggbb)."),
    dedupe: bool = typer.Option(True, "--dedupe/--no-dedupe", help="Reject near-duplicates (perceptual hash)."),
    dedupe_distance: int = typer.Option(4, "--dedupe-distance", min=0, max=64,
                                        help="Max differing perceptual-hash bits (of 64) for duplicates."),
    blur_threshold: float = typer.Option(60.0, "--blur-threshold", min=0,
                                         help="Warn when the Laplacian variance is below this (0 = off)."),
    workers: int = typer.Option(4, "--workers", min=1, help="Parallel threads."),
) -> None:
    """Normalize a raw image folder: upright RGB PNGs with captions; bad files to <out>/rejected/ with a reason."""
    options = PrepareOptions(
        background=parse_color(background),
        max_side=max_side,
        min_side=min_side,
        dedupe=dedupe,
        dedupe_distance=dedupe_distance,
        blur_threshold=blur_threshold,
        workers=workers,
    )
    with Progress(TextColumn("[bold]prepare"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name[-40:])

        report = api.prepare(raw_dir, out, options, progress)
    print_report(report)


def print_report(report: PrepareReport) -> None:
    """Summary table, rejected files with reasons, and warnings."""
    table = Table(title=f"prepare → {report.out}", show_header=False)
    table.add_row("images kept", str(report.ok))
    table.add_row("written this run", str(report.written))
    table.add_row("unchanged (skipped)", str(report.unchanged))
    table.add_row("rejected", str(len(report.rejected)))
    if report.removed:
        table.add_row("stale outputs removed", str(report.removed))
    console.print(table)
    if report.rejected:
        rejected = Table(title=f"rejected (copied to {report.out / 'rejected'})")
        rejected.add_column("file")
        rejected.add_column("reason")
        for row in report.rejected:
            rejected.add_row(row.source, row.reason)
        console.print(rejected)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"log: {report.log_path}", highlight=False)


@dataset_app.command("inspect")
def inspect(
    data_dir: Path = typer.Argument(..., help="Dataset folder (as data.train_data_dir)."),
    config: ConfigFiles = [],
    set_: SetValues = [],
    batch_size: Optional[int] = typer.Option(None, "--batch-size", "-b", min=1,
                                             help="Batch size for the step count; unset = train.train_batch_size."),
) -> None:
    """Buckets with counts, folders with repeats and captions found/missing, and steps per epoch."""
    cfg = resolve_options(config, (), None, set_).config
    data = DataSection.model_validate({**cfg.data.model_dump(), "train_data_dir": str(data_dir)})
    size = batch_size or cfg.train.train_batch_size
    plan = api.inspect_dataset(data, size, cfg.train.seed)
    folders = Table(title=f"folders in {data_dir}")
    for col in ("folder", "images", "repeats", "kind", "captions", "missing"):
        folders.add_column(col, justify="left" if col == "folder" else "right")
    for f in plan.folders:
        folders.add_row(str(f.path), str(f.images), str(f.repeats), "reg" if f.is_reg else "train",
                        str(f.captions_found), str(f.captions_missing))
    console.print(folders)
    uses = plan.sampler.bucket_counts() if hasattr(plan.sampler, "bucket_counts") else Counter()
    distinct = Counter(ex.size for ex in plan.train + plan.reg)
    buckets = Table(title="buckets (width × height)")
    for col in ("bucket", "examples", "per epoch", "batches"):
        buckets.add_column(col, justify="right")
    for bucket in sorted(distinct, key=lambda s: (s[0] / s[1], s)):
        n = uses.get(bucket, 0)
        buckets.add_row(f"{bucket[0]}×{bucket[1]}", str(distinct[bucket]), str(n), str(-(-n // size)))
    console.print(buckets)
    if not plan.train:
        raise DataError(f"no training examples in {data_dir}", "check the folder names' repeat prefixes")
    console.print(f"validation images: {len(plan.validation)}   batch size: {size}   "
                  f"[bold]steps per epoch: {len(plan.sampler)}[/]", highlight=False)
    for f in plan.folders:
        if f.uncaptioned:
            names = some_of([p.relative_to(f.path).as_posix() for p in f.uncaptioned], LISTED)
            console.print(escape(f"images without captions in {f.path} ({len(f.uncaptioned)}): {names}"),
                          highlight=False, soft_wrap=True)
    for warning in api.dataset_warnings(plan, cfg.model_copy(update={"data": data})):
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
