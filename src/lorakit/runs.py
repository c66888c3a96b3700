"""Run folders: `<output_dir>/<run_id>/`, claimed atomically so a run never overwrites another; a run's final LoRA,
and its copy into a UI's LoRA folder."""

from __future__ import annotations

import hashlib
import re
import shutil
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Callable

from .errors import LorakitError


def new_run_dir(output_dir: Path, run_id: str | None = None) -> Path:
    """Create and return a fresh run folder; a given run_id that exists is an error, a timestamp gets a suffix."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if run_id:
        path = output_dir / run_id
        try:
            path.mkdir()
        except FileExistsError:
            raise LorakitError(f"run folder {path} already exists", "choose another output.run_id") from None
        return path
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    for n in range(1, 10_000):
        path = output_dir / (stamp if n == 1 else f"{stamp}_{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise LorakitError(f"could not create a run folder in {output_dir}")


def free_name(base: str, taken: Callable[[str], bool]) -> str:
    """`base`, else `base-2`, `base-3`, …: the first name `taken` says is free (a folder, a remote path)."""
    candidate, n = base, 2
    while taken(candidate):
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def final_lora(run_dir: Path) -> Path | None:
    """The run's final LoRA, `train/<output_name>.safetensors` (or the `<output_name>_peft` folder of a run saved
    only in the diffusers format) by the run's config.toml (Difference with
    first_pass_only: its copy machine `<output_name>_copy`), or None while the run has not written it: a Difference
    run stopped in pass 2 has only the copy machine, which is not its result. A run folder without config.toml:
    the newest save that is not an intermediate one (`-step<N>`, `-<epoch>`)."""
    train = Path(run_dir) / "train"
    name = _final_name(Path(run_dir))
    if name is not None:
        path, peft = train / f"{name}.safetensors", train / f"{name}_peft"  # output.save_format = "peft": a folder
        return path if path.is_file() else peft if peft.is_dir() else None
    files = [p for p in train.glob("*.safetensors") if not STEP_SAVE.search(p.stem)] if train.is_dir() else []
    return max(files, key=lambda p: (p.stat().st_mtime, p.name)) if files else None


COPY_MACHINE_SUFFIX = "_copy"  # Difference's pass 1 (the copy machine) is saved as <output_name>_copy

# the trainer's intermediate saves: <output_name>-step<N:08d> and, at an epoch's end, <output_name>-<epoch:06d>;
# "_peft" is the diffusers-format folder beside (or instead of) the .safetensors file
STEP_SAVE = re.compile(r"-(step\d{8}|\d{6})(_peft)?$")


def _final_name(run_dir: Path) -> str | None:
    try:
        config = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    name, mode = config.get("output", {}).get("output_name"), config.get("mode", {})
    if not isinstance(name, str) or not name:
        return None
    return name + COPY_MACHINE_SUFFIX if mode.get("type") == "difference" and mode.get("first_pass_only") else name


def install_lora(lora: Path, folder: Path) -> str:
    """Copy `lora` into a UI's LoRA folder as `lorakit-<stem>-<sha256[:12]>.safetensors`; returns that name.

    ComfyUI caches a loaded LoRA by its path, so a retrained file under an old name would apply the old weights; a
    name from the content is new whenever the weights are. A file of that name with the same content is reused; one
    with other content is never overwritten; nothing else in the folder is touched."""
    from .io import atomic_path

    digest = _sha256(lora)[:12]
    name = f"lorakit-{lora.stem}-{digest}{lora.suffix}"
    target = folder / name
    if target.exists():
        if _sha256(target)[:12] != digest:
            raise LorakitError(f"{target} exists with other contents", "move it away and install again")
    else:
        with atomic_path(target) as tmp:
            shutil.copyfile(lora, tmp)
    return name


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
