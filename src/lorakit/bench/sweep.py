"""`lorakit bench`: render a plan, measure every image, write the grids, metrics.csv and index.html."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..io import write_text_atomic
from .plan import BenchPlan
from .render import Progress, render_plan
from .report import loss_curve_svg, measure, weight_summary, write_csv, write_grids, write_index

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class BenchResult:
    folder: Path
    index: Path
    grids: list[Path]
    summary: list[str]


def bench_folder(lora: Path, out: Path | None = None) -> Path:
    """Where a bench of `lora` goes: `out`, else `runs/<run_id>/bench/` when the LoRA sits in a run's `train/`
    folder, else `bench/` beside it; `bench-2`, `bench-3`, … when that exists (a bench never overwrites)."""
    base = out or (lora.parent.parent / "bench" if lora.parent.name == "train" else lora.parent / "bench")
    folder, n = base, 2
    while folder.exists():
        folder, n = base.with_name(f"{base.name}-{n}"), n + 1
    return folder


def training_images(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def run_bench(plan: BenchPlan, folder: Path, train_dir: Path | None = None,
              progress: Progress | None = None) -> BenchResult:
    """Render `plan` into `folder` (new) and write its report; the plan is saved first as plan.json."""
    folder.mkdir(parents=True, exist_ok=False)
    write_text_atomic(folder / "plan.json", plan.to_json())
    rendered = render_plan(plan, folder / "images", progress)
    rows = measure(rendered, training_images(train_dir))
    write_csv(rows, folder / "metrics.csv")
    grids = write_grids(plan, rendered, folder)
    summary = weight_summary(rows) if any(w == 0 for w in plan.weights) else \
        ["no weight 0 in the sweep: the effect is not measured against the base model"]
    loss = loss_curve_svg(Path(plan.lora).parent / "log.csv")
    write_index(plan, grids, rows, summary, loss, folder / "index.html")
    return BenchResult(folder, folder / "index.html", grids, summary)
