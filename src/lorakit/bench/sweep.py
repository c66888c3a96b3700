"""`lorakit bench`: render a plan, measure every image, write the grids, metrics.csv and index.html."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..io import write_text_atomic
from . import comfyui
from .comfyui_render import check_workflow, render_comfyui
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
    from ..runs import free_name

    return base.with_name(free_name(base.name, lambda name: base.with_name(name).exists()))


def training_images(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


@dataclass(frozen=True)
class ComfyTarget:
    """Where the comfyui backend renders: a running ComfyUI and the LoRA folder it reads."""

    url: str = "http://127.0.0.1:8188"
    lora_install_dir: Path | None = None


def run_bench(plan: BenchPlan, folder: Path, train_dir: Path | None = None, progress: Progress | None = None,
              comfy: ComfyTarget | None = None, embedding_model: Path | None = None) -> BenchResult:
    """Render `plan` into `folder` (new) and write its report; the plan (and a ComfyUI workflow) is saved first.
    `embedding_model` (a local CLIP/DINOv2 folder) adds embedding similarity to the training images."""
    embedder = None
    if embedding_model is not None:  # loaded first: a folder that is not a model fails before any rendering
        from .embeddings import load_embedder

        embedder = load_embedder(embedding_model)
    workflow = comfyui.load_workflow(plan.workflow) if plan.backend == "comfyui" else None
    if workflow is not None:  # before the folder exists: a workflow lorakit cannot patch leaves nothing behind
        check_workflow(workflow)
        comfyui.system_stats((comfy or ComfyTarget()).url)  # ComfyUI is up (or a clear error)
    folder.mkdir(parents=True, exist_ok=False)
    write_text_atomic(folder / "plan.json", plan.to_json())
    if workflow is None:
        rendered = render_plan(plan, folder / "images", progress)
    else:
        write_text_atomic(folder / "workflow.json", json.dumps(workflow, indent=2, ensure_ascii=False))
        comfy = comfy or ComfyTarget()
        rendered = render_comfyui(plan, folder / "images", comfy.url, workflow, comfy.lora_install_dir,
                                  prefix=f"lorakit/{_prefix_name(folder)}", progress=progress)
    rows = measure(rendered, training_images(train_dir), embedder)
    write_csv(rows, folder / "metrics.csv")
    grids = write_grids(plan, rendered, folder)
    summary = weight_summary(rows) if any(w == 0 for w in plan.weights) else \
        ["no weight 0 in the sweep: the effect is not measured against the base model"]
    loss = loss_curve_svg(Path(plan.lora).parent / "log.csv")
    write_index(plan, grids, rows, summary, loss, folder / "index.html")
    return BenchResult(folder, folder / "index.html", grids, summary)


def _prefix_name(folder: Path) -> str:
    """`<run id>/bench` for runs/<run id>/bench, so ComfyUI's output folder mirrors lorakit's runs/ folder."""
    name = f"{folder.parent.name}/{folder.name}" if folder.parent.name else folder.name
    return re.sub(r"[^\w.\-/]", "_", name)
