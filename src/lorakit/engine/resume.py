"""Resuming a run: which checkpoint, whether the inputs are still the ones it trained on, and setting aside what
the interrupted continuation wrote after it (docs/stopping-and-resuming.md)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, LorakitError, some_of
from .state import CHECKPOINTS, CheckpointData, checkpoints_of, read_checkpoint, step_of

SUPERSEDED = "superseded"
STEP_IN_NAME = re.compile(r"(?:-step|^step)(\d{8,})")  # `<name>-step00000120.safetensors`, `step00000120_00.png`


@dataclass
class ResumePoint:
    """A checkpoint chosen to continue from, loaded, with the config changes accepted for it."""

    path: Path
    data: CheckpointData
    changes: list[str] = field(default_factory=list)  # "key: old → new" of the accepted (safe) changes

    @property
    def run_dir(self) -> Path:
        return self.path.parent.parent

    @property
    def step(self) -> int:
        return int(self.data.state["step"])


def find_checkpoint(spec: str | Path, output_dir: Path, warn: Callable[[str], None],
                    accept: Callable[[Path], bool] = lambda p: True) -> Path:
    """The checkpoint `--resume` names: a checkpoint folder, a run folder (its newest complete checkpoint), or
    "auto" (the newest complete checkpoint in `output_dir` that `accept`s)."""
    if str(spec) == "auto":
        found = sorted((p for run in _run_dirs(output_dir) for p in checkpoints_of(run, warn)),
                       key=lambda p: (p / "complete.json").stat().st_mtime)
        fitting = [p for p in found if accept(p)]
        if fitting:
            return fitting[-1]
        if found:
            raise LorakitError(f"--resume auto: no checkpoint in {output_dir} was written by a run of this config "
                               f"(checkpoints found: {some_of(found)})",
                               "resume one of them by its run folder (`--resume runs/<id>`) without --config, "
                               "or start a new run")
        raise LorakitError(f"--resume auto: no complete checkpoint in {output_dir}",
                           "start the run without --resume (checkpoints are written every "
                           "checkpoint.every_n_steps steps and when a run stops)")
    path = Path(spec)
    if not path.is_dir():
        raise LorakitError(f"--resume {spec}: no such folder", "pass a run folder (runs/<id>), one of its "
                           "checkpoints/step-… folders, or auto")
    if step_of(path) >= 0:
        return path
    complete = checkpoints_of(path, warn)
    if not complete:
        raise LorakitError(f"--resume {spec}: no complete checkpoint in {path / CHECKPOINTS}",
                           "a run writes one every checkpoint.every_n_steps steps, when it ends and when it stops; "
                           "this run has none to continue from")
    return complete[-1]


def _run_dirs(output_dir: Path) -> list[Path]:
    return [p for p in output_dir.iterdir() if (p / CHECKPOINTS).is_dir()] if output_dir.is_dir() else []


def load_point(path: Path) -> ResumePoint:
    return ResumePoint(path, read_checkpoint(path))


# --- the training inputs --------------------------------------------------------------------------------------

def input_fingerprints(examples: list[Any], files: dict[str, Path]) -> dict[str, str]:
    """{image file: hash of its content and how it is used (caption, size, mirroring, repeats)} for the dataset's
    examples, and {config key: content hash} for the single files a mode trains on."""
    from ..data.example import file_fingerprint

    uses: dict[str, list[str]] = {}
    for e in examples:  # by absolute path: a resume reads the checkpoint's config, whose paths are absolute
        uses.setdefault(os.path.abspath(e.image), []).append(f"{e.key}|{e.caption}|{e.repeats}|{int(e.is_reg)}")
    out = {image: hashlib.sha1("\n".join(sorted(u)).encode()).hexdigest() for image, u in uses.items()}
    return out | {key: file_fingerprint(path) for key, path in files.items()}


def check_inputs(saved: dict[str, str], now: dict[str, str], checkpoint: Path) -> None:
    """Refuse a resume whose training images (or their captions, repeats) differ from the checkpoint's."""
    added = [k for k in now if k not in saved]
    removed = [k for k in saved if k not in now]
    changed = [k for k in now if k in saved and now[k] != saved[k]]
    if added or removed or changed:
        lines = [f"{label}: {some_of(items)}" for label, items in
                 (("added", added), ("removed", removed), ("changed (content, caption or repeats)", changed)) if items]
        raise ConfigError([f"the training data differs from {checkpoint}'s: " + "; ".join(lines)],
                          "a resume continues the same training: put the data back as it was, or start a new run "
                          "(from the LoRA with network.network_weights)")


# --- what the interrupted continuation wrote ------------------------------------------------------------------

def supersede(run_dir: Path, step: int, kept: list[str]) -> Path | None:
    """Move what the run wrote after the checkpoint of `step` (LoRA files not in `kept`, the run-relative paths
    written before it; samples of later steps; later checkpoints) into `superseded/<time>/`, and copy log.csv
    and the samples' contact sheet there; nothing is deleted or overwritten. Returns the folder, or None when there was nothing to move."""
    train, samples = run_dir / "train", run_dir / "samples"
    moving = [p for p in (train.iterdir() if train.is_dir() else [])
              if (p.suffix == ".safetensors" or (p.is_dir() and p.name.endswith("_peft")))
              and str(p.relative_to(run_dir)) not in kept]
    moving += [p for p in (samples.glob("step*.png") if samples.is_dir() else []) if _step_in(p.name) > step]
    folder = run_dir / CHECKPOINTS  # complete or not: a later step is written again
    moving += [p for p in (folder.iterdir() if folder.is_dir() else []) if step_of(p) > step]
    if not moving:
        return None
    target = run_dir / SUPERSEDED / datetime.now().strftime("%Y%m%d_%H%M%S_%f")
    for p in moving:
        dest = target / p.relative_to(run_dir)
        dest.parent.mkdir(parents=True, exist_ok=True)
        p.rename(dest)
    for kept in (train / "log.csv", samples / "contact_sheet.png"):  # the resumed run rewrites these
        if kept.exists():
            (target / kept.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(kept, target / kept.parent.name / kept.name)
    return target


def _step_in(name: str) -> int:
    m = STEP_IN_NAME.search(name)
    return int(m[1]) if m else -1
