"""What every run writes beside its results so that it can be reproduced.

- `config.toml`: the resolved config; `lorakit train --config runs/<id>/config.toml` runs the same thing again.
- `params.json`: the same values plus where each came from (layer names) and any migration notes.
- `environment.json`: Python, platform, package versions, torch device and GPU.
Each file is written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import tomli_w

from ..io import write_text_atomic
from .loader import ResolvedConfig
from .schema import LorakitConfig

PACKAGES = ("lorakit", "torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "pydantic",
            "bitsandbytes", "xformers")


def config_toml(config: LorakitConfig) -> str:
    """The config as TOML (unset optional values are left out, which reads back as unset)."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def environment() -> dict[str, Any]:
    """Python, OS, package versions and the torch device the run sees."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
    }
    if "torch" in sys.modules or versions["torch"]:
        import torch

        cuda = torch.cuda.is_available()
        env["torch"] = {
            "cuda_available": cuda,
            "cuda_version": torch.version.cuda,
            "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
            "mps_available": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
        }
    return env


def write_snapshot(run_dir: Path, resolved: ResolvedConfig | LorakitConfig) -> None:
    """Write config.toml, params.json and environment.json into `run_dir` (created if needed)."""
    if isinstance(resolved, LorakitConfig):
        resolved = ResolvedConfig(resolved, {}, [])
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.toml", config_toml(resolved.config))
    params = {
        "config": resolved.config.model_dump(mode="json"),
        "origins": resolved.origins,
        "layers": [layer.name for layer in resolved.layers],
        "notes": resolved.notes,
        "warnings": resolved.warnings,
    }
    write_text_atomic(run_dir / "params.json", json.dumps(params, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(run_dir / "environment.json", json.dumps(environment(), indent=2) + "\n")
