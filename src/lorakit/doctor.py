"""`lorakit doctor`: is this machine ready to train? Each check says OK, or what is wrong and the fix.

Checks are plain data (`Check`), so the CLI prints them as a table and the UI can show the same rows.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

Status = Literal["ok", "warn", "fail"]
CORE = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "pydantic")
LOW_DISK_BYTES = 2 * 1024**3  # a few SDXL checkpoints, the latent cache and logs


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, its status, what was found, and the fix when not OK."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def installed_version(package: str) -> str | None:
    """The installed distribution's version, or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def lorakit_requirements() -> dict[str, Requirement]:
    """lorakit's own dependency ranges (from its installed metadata), by lower-case package name."""
    reqs = {}
    try:
        lines = metadata.requires("lorakit") or []
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return {}
    for line in lines:
        req = Requirement(line)
        if req.marker is None:  # extras (test, tensorboard…) carry a marker
            reqs[req.name.lower()] = req
    return reqs


def check_package(name: str, required: Requirement | None) -> Check:
    """A core package is installed, within lorakit's tested range."""
    version = installed_version(name)
    if version is None:
        spec = str(required) if required else name
        return Check(name, "fail", "not installed", f"pip install '{spec}' (or `make setup` in a checkout)")
    if required and required.specifier and not required.specifier.contains(version, prereleases=True):
        return Check(name, "fail", f"{version} is outside lorakit's range {required.specifier}",
                     f"pip install '{required}'")
    return Check(name, "ok", version)


def _min_peft(module: str) -> str | None:
    """The lowest peft a library accepts for its LoRA integration (its MIN_PEFT_VERSION), if it says."""
    try:
        return getattr(importlib.import_module(module), "MIN_PEFT_VERSION", None)
    except Exception:  # an import error here is reported by the package checks
        return None


def check_peft_pairing() -> list[Check]:
    """transformers and diffusers refuse a peft older than their MIN_PEFT_VERSION when a text encoder gets a LoRA
    (transformers 5.24 wants peft 0.22): caught here, before a run dies on it."""
    peft = installed_version("peft")
    if peft is None:
        return []
    found = []
    for library, module in (("transformers", "transformers.integrations.peft"),
                            ("diffusers", "diffusers.utils.constants")):
        needed, have = _min_peft(module), installed_version(library)
        if not (needed and have):
            continue
        try:
            too_old = Version(peft) < Version(needed)
        except InvalidVersion:
            continue
        name = f"{library} + peft"
        if too_old:
            found.append(Check(name, "fail", f"{library} {have} needs peft ≥ {needed}, peft is {peft}",
                               f"pip install 'peft>={needed}', or the {library} release in requirements.lock"))
        else:
            found.append(Check(name, "ok", f"{library} {have} accepts peft {peft} (≥ {needed})"))
    return found


MIN_MAC_MEMORY = 16 * 1024**3  # spec 003: 16 GB is the minimum for SD 2.1 LoRA training on a Mac, 32 GB recommended
MIN_VRAM = 8 * 1024**3


def check_gpu() -> list[Check]:
    """The device accelerate would train on (engine/device.training_device): its name, memory, what it runs (bf16,
    fp16, fp8 weights, TF32, torch.compile; on a Mac the macOS and torch behind that) and what mixed_precision
    'auto' means there. Without a GPU training works, slowly."""
    try:
        import torch
    except ImportError:
        return []
    from .engine.device import auto_mixed_precision, describe, device_support, training_device

    device = training_device()
    auto = auto_mixed_precision(device)
    found = []
    if device.type == "cuda":  # every GPU: a launcher may use them all
        for i in range(torch.cuda.device_count()):
            s = device_support(torch.device("cuda", i), memory=True)
            low = (s.memory_bytes or 0) < MIN_VRAM
            found.append(Check(f"GPU {i}", "warn" if low else "ok", describe(s),
                               "under 8 GiB: try `--preset lowvram-8gb`" if low else ""))
    elif device.type == "mps":
        s = device_support(device)
        low = s.memory_bytes is not None and s.memory_bytes < MIN_MAC_MEMORY
        found.append(Check("GPU", "warn" if low else "ok", f"Apple MPS, {describe(s)}",
                           "under 16 GB of unified memory: SD 1.x at 512 px, batch 1, gradient checkpointing "
                           "(docs/performance.md)" if low else ""))
    else:
        build = f"torch {torch.__version__} " + ("built with CUDA " + torch.version.cuda if torch.version.cuda
                                                 else "is a CPU build")
        found.append(Check("GPU", "warn", f"no CUDA GPU or Apple MPS ({build}): training runs on the CPU, slowly",
                           "on a GPU machine install a CUDA build of torch (https://pytorch.org/get-started/locally/)"))
    means = "'bf16'" if auto == "bf16" else "'no' (fp32)"
    found.append(Check("training device", "ok", f"{device.type} (accelerate's choice); mixed_precision 'auto' = "
                                                f"{means} here"))
    return found


def check_optional() -> list[Check]:
    """Packages and programs only some features need: missing ones are warnings naming the feature."""
    found = []
    for name, feature, fix in (
        ("bitsandbytes", "optimizer_type = 'AdamW8bit'", "pip install bitsandbytes (CUDA)"),
        ("tensorboard", "train.log_with = 'tensorboard'", "pip install 'lorakit[tensorboard]'"),
        ("gradio", "the web UI", "pip install gradio"),
    ):
        version = installed_version(name)
        found.append(Check(name, "ok", version) if version else
                     Check(name, "warn", f"not installed (needed for {feature})", fix))
    rclone = shutil.which("rclone")
    if rclone:
        try:
            out = subprocess.run([rclone, "version"], capture_output=True, text=True, timeout=20).stdout
            found.append(Check("rclone", "ok", (out.splitlines() or [rclone])[0]))
        except (OSError, subprocess.SubprocessError) as exc:
            found.append(Check("rclone", "warn", f"{rclone} does not run: {exc}", "reinstall rclone"))
    else:
        found.append(Check("rclone", "warn", "not found (needed for `lorakit batch` with remote storage)",
                           "apt install rclone, or see https://rclone.org/install/"))
    return found


def _existing(path: Path) -> Path:
    """The path itself or its nearest existing parent (where a new folder would be created)."""
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _can_write(folder: Path) -> bool:
    """Really create (and remove) a scratch folder: permission bits alone miss read-only mounts and /proc."""
    try:
        with tempfile.TemporaryDirectory(prefix=".lorakit-doctor-", dir=folder):
            return True
    except OSError:
        return False


def check_output(output_dir: Path) -> list[Check]:
    """The output folder can be written (or created) and its disk has room."""
    probe = _existing(output_dir)
    if not (probe.is_dir() and _can_write(probe)):
        return [Check("output folder", "fail", f"{output_dir}: cannot be created or written (nearest existing: "
                      f"{probe})", "choose another output.output_dir or fix the folder's permissions")]
    found = [Check("output folder", "ok", f"{output_dir} is writable" if output_dir.exists()
                   else f"{output_dir} can be created in {probe}")]
    free = shutil.disk_usage(probe).free
    detail = f"{free / 1024**3:.1f} GiB free on {probe}"
    found.append(Check("free disk", "ok", detail) if free >= LOW_DISK_BYTES else
                 Check("free disk", "warn", detail, "free some space: checkpoints and the latent cache need room"))
    return found


def run_checks(output_dir: Path = Path("runs")) -> list[Check]:
    """Every check, in the order the report shows them."""
    python = sys.version.split()[0]
    found = [Check("python", "ok" if sys.version_info >= (3, 11) else "fail", python,
                   "" if sys.version_info >= (3, 11) else "lorakit needs Python 3.11 or newer (tomllib)"),
             Check("lorakit", "ok", installed_version("lorakit") or "not installed (running from source)")]
    reqs = lorakit_requirements()
    found += [check_package(name, reqs.get(name)) for name in CORE]
    found += check_peft_pairing() + check_gpu() + check_optional() + check_output(output_dir)
    return found
