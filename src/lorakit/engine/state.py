"""Checkpoints: everything a run needs to continue exactly where it was (docs/stopping-and-resuming.md).

`<run>/checkpoints/step-<N>/` holds the adapters' tensors (fp32, every attached adapter), the optimizer, the
scheduler, the gradient scaler (fp16), every random generator, the loop's position (`state.json`), the resolved
config and the fingerprints of the training inputs. It is written into a temporary folder, a marker file last,
then renamed: a folder named `step-<N>` is complete, and a checkpoint without its marker (copied by hand, cut
short) is ignored with a warning. `torch.load(weights_only=True)` reads it back: no pickled code runs on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import DiskFullError, LorakitError, is_disk_full
from ..io import temp_name

CHECKPOINTS = "checkpoints"
MARKER = "complete.json"
FORMAT = 1
NAME = re.compile(r"^step-(\d{8,})$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step-{step:08d}"


def size_estimate(params: list[torch.nn.Parameter]) -> int:
    """Bytes of one checkpoint (an upper estimate for AdamW): fp32 weights and two fp32 moments per weight, plus
    the random states and headers."""
    return sum(p.numel() for p in params) * 4 * 3 + len(params) * 3 * 512 + 64 * 1024


def config_hash(config_toml: str) -> str:
    return hashlib.sha256(config_toml.encode("utf-8")).hexdigest()


# --- random generators ------------------------------------------------------------------------------------------

def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Python's, NumPy's, torch's (CPU and the current CUDA device) and the named generators' states, as tensors and
    numbers only (so the file loads with weights_only=True)."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_available() else [],  # the training device's
        "generators": {name: g.get_state() for name, g in generators.items()},
    }


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])
    for name, g in generators.items():
        g.set_state(state["generators"][name])


# --- writing ----------------------------------------------------------------------------------------------------

@dataclass
class CheckpointData:
    """What one checkpoint holds, in memory."""

    tensors: dict[str, torch.Tensor]  # adapter parameters by name
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    state: dict[str, Any]  # the loop's position and the run's bookkeeping (JSON)
    config_toml: str
    inputs: dict[str, str]  # training input → content fingerprint


def write_checkpoint(run_dir: Path, step: int, data: CheckpointData,
                     between_files: Callable[[], None] = lambda: None) -> Path:
    """Write `checkpoints/step-<step>/` atomically; returns it. Disk full: the partial folder is removed, older
    checkpoints stay, and a DiskFullError names the folder. `between_files` runs after the first file (tests kill
    the process there)."""
    final = checkpoint_dir(run_dir, step)
    if final.exists():
        raise LorakitError(f"checkpoint {final} already exists; refusing to overwrite it")
    tmp = temp_name(final)
    state = {**data.state, "format": FORMAT, "step": step, "config_hash": config_hash(data.config_toml),
             "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    writers: list[tuple[str, Callable[[Path], None]]] = [
        ("adapter.safetensors", lambda p: save_file(
            {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in data.tensors.items()}, str(p))),
        ("optimizer.pt", lambda p: torch.save(data.optimizer, p)),
        ("scheduler.pt", lambda p: torch.save(data.scheduler, p)),
        ("rng.pt", lambda p: torch.save(data.rng, p)),
        ("state.json", lambda p: p.write_text(json.dumps(state, indent=1), encoding="utf-8")),
        ("config.toml", lambda p: p.write_text(data.config_toml, encoding="utf-8")),
        ("inputs.json", lambda p: p.write_text(json.dumps(data.inputs, indent=0), encoding="utf-8")),
    ]
    if data.scaler is not None:
        writers.append(("scaler.pt", lambda p: torch.save(data.scaler, p)))
    try:
        tmp.mkdir(parents=True)
        sizes = {}
        for i, (name, write) in enumerate(writers):
            write(tmp / name)
            _fsync(tmp / name)
            sizes[name] = (tmp / name).stat().st_size
            if i == 0:
                between_files()
        (tmp / MARKER).write_text(json.dumps({"step": step, "files": sizes}), encoding="utf-8")
        _fsync(tmp / MARKER)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise DiskFullError(final, None, None, "writing the checkpoint") from exc
        if isinstance(exc, OSError):
            raise LorakitError(f"cannot write the checkpoint {final}: {exc.strerror or exc}",
                               "check the run folder's permissions and free space; the previous checkpoint "
                               "is kept") from exc
        raise
    return final


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """The rename itself on disk (POSIX; other systems skip it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- finding and reading ----------------------------------------------------------------------------------------

def checkpoints_of(run_dir: Path, warn: Callable[[str], None] = lambda m: None) -> list[Path]:
    """The run's complete checkpoints, oldest step first; an incomplete one is named to `warn` and skipped."""
    folder = run_dir / CHECKPOINTS
    found = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not p.is_dir():
            continue
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            warn(f"ignoring {p}: a checkpoint whose writing was interrupted (removed once its writer has been "
                 "gone 10 minutes)")
        elif NAME.match(p.name):
            if is_complete(p):
                found.append(p)
            else:
                warn(f"ignoring {p}: incomplete checkpoint (no {MARKER} or a file is missing or cut short)")
    return sorted(found, key=step_of)


def is_complete(path: Path) -> bool:
    """The marker is there and every file it names has the size it had when written."""
    try:
        marker = json.loads((path / MARKER).read_text(encoding="utf-8"))
        return all((path / name).stat().st_size == size for name, size in marker["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def step_of(path: Path) -> int:
    m = NAME.match(path.name)
    return int(m[1]) if m else -1


def read_checkpoint(path: Path) -> CheckpointData:
    """Load a complete checkpoint (tensors on the CPU)."""
    if not is_complete(path):
        raise LorakitError(f"{path} is not a complete lorakit checkpoint", "pass a run folder (runs/<id>) or one "
                           "of its checkpoints/step-… folders that has a complete.json")
    try:
        def load(name: str) -> Any:
            return torch.load(path / name, map_location="cpu", weights_only=True)

        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        if state.get("format") != FORMAT:
            raise LorakitError(f"{path}: checkpoint format {state.get('format')} (this lorakit reads {FORMAT})",
                               "resume it with the lorakit version that wrote it")
        return CheckpointData(
            tensors=load_file(str(path / "adapter.safetensors")), optimizer=load("optimizer.pt"),
            scheduler=load("scheduler.pt"), scaler=load("scaler.pt") if (path / "scaler.pt").exists() else None,
            rng=load("rng.pt"), state=state, config_toml=(path / "config.toml").read_text(encoding="utf-8"),
            inputs=json.loads((path / "inputs.json").read_text(encoding="utf-8")))
    except LorakitError:
        raise
    except Exception as exc:
        raise LorakitError(f"cannot read the checkpoint {path}: {type(exc).__name__}: {exc}",
                           "resume from an older checkpoint of the run (checkpoints/step-…)") from exc


def prune(run_dir: Path, keep_last: int) -> list[Path]:
    """Delete the oldest complete checkpoints beyond `keep_last`; returns what was deleted."""
    complete = checkpoints_of(run_dir)
    doomed = complete[: max(0, len(complete) - keep_last)]
    for p in doomed:
        gone = temp_name(p)  # renamed first: a kill mid-delete leaves a temp folder, not a broken step-N
        os.replace(p, gone)
        shutil.rmtree(gone, ignore_errors=True)
    return doomed
