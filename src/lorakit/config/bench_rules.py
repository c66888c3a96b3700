"""Checks of the [bench] section: what would stop a bench after an hour of training is caught before it starts."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, LorakitError
from .schema import LorakitConfig
from .validate import Finding


def check_bench(cfg: LorakitConfig, paths: bool = False, benching: bool = False) -> list[Finding]:
    """The sampler is one lorakit renders with (builtin); with `paths`, the workflow and folders exist. Those are
    errors when `benching` (bench, pipeline), warnings for a run that only trains (it never reads them)."""
    from ..bench.plan import sampler_of

    b, found = cfg.bench, []
    if len(set(b.weights)) != len(b.weights) or not b.weights:
        found.append(Finding("bench.weights", f"{b.weights}: one or more weights, none repeated"))
    if not b.seeds:
        found.append(Finding("bench.seeds", "needs at least one seed"))
    if b.backend == "builtin" and (b.sampler is not None or b.scheduler is not None):
        try:
            sampler_of(b.sampler or "euler", b.scheduler or "normal")
        except ConfigError as exc:
            found.append(Finding("bench.sampler", exc.problems[0]))
    if not paths:
        return found
    on_disk: list[Finding] = []
    if b.backend == "comfyui" and b.workflow:
        from ..bench import comfyui
        from ..bench.comfyui_render import check_workflow

        try:
            check_workflow(comfyui.load_workflow(b.workflow))
        except LorakitError as exc:
            on_disk.append(Finding("bench.workflow", str(exc)))
    for key in ("lora_install_dir", "embedding_model"):
        value = getattr(b, key)
        if value and not Path(value).is_dir():
            on_disk.append(Finding(f"bench.{key}", f"{value}: no such folder"))
    if not benching:
        on_disk = [Finding(f.key, f"{f.message} (only the bench reads it)", False) for f in on_disk]
    return found + on_disk
