"""What every run writes beside its results so that it can be reproduced.

- `config.toml`: the resolved config; `lorakit train --config runs/<id>/config.toml` runs the same thing again,
  from any working directory: relative paths are written absolute (resolved against the working directory of the
  run); built-in model names (tiny-sd1, random-sd15, …), hub ids (`org/name`) and preset names stay as they are.
- `params.json`: the same values plus where each came from (layer names) and any migration notes.
- `environment.json`: Python, platform, package versions, torch device and GPU.
Each file is written to a temporary name and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import tomli_w

from ..io import write_text_atomic
from .loader import ResolvedConfig
from .schema import LorakitConfig
from .validate import looks_like_hub_id

PACKAGES = ("lorakit", "torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "pydantic",
            "bitsandbytes", "xformers")


def config_toml(config: LorakitConfig) -> str:
    """The config as TOML (unset optional values are left out, which reads back as unset)."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


def _absolute(value: str, cwd: Path) -> str:
    """`value` as an absolute path (normalised, symlinks kept); '~/…' and absolute paths are left as written."""
    if not value or value.startswith("~") or Path(value).is_absolute():
        return value
    return os.path.normpath(cwd / value)


def _model_path(value: str, cwd: Path) -> str:
    """A local model path made absolute; a built-in model name or a hub id (not a local folder) as it is."""
    from ..families import BUILTIN_MODELS

    if value in BUILTIN_MODELS or (looks_like_hub_id(value) and not (cwd / value).exists()):
        return value
    return _absolute(value, cwd)


def _layer_arg(value: str, cwd: Path) -> str:
    """A `batch.add` entry: a TOML file made absolute; a preset name (no such file, no folder part) as it is."""
    path = Path(value)
    return _absolute(value, cwd) if (cwd / path).exists() or len(path.parts) > 1 else value


def absolute_paths(config: LorakitConfig, cwd: Path | None = None) -> LorakitConfig:
    """The config with every relative path resolved against `cwd` (default: the working directory), so that a
    snapshot runs the same from anywhere. Values are otherwise unchanged (not re-validated)."""
    cwd = Path(cwd or Path.cwd()).absolute()
    c = config
    model = c.model.model_copy(update={
        "pretrained_model_name_or_path": _model_path(c.model.pretrained_model_name_or_path, cwd),
        "vae": c.model.vae and _model_path(c.model.vae, cwd)})
    network = c.network.model_copy(update={
        "network_weights": c.network.network_weights and _absolute(c.network.network_weights, cwd)})
    data_paths = {name: _absolute(getattr(c.data, name), cwd) for name in type(c.data).model_fields
                  if (name.endswith("_dir") or name == "cache_folder") and isinstance(getattr(c.data, name), str)}
    data_paths["subsets"] = [s.model_copy(update={"image_dir": _absolute(s.image_dir, cwd)})
                             for s in getattr(c.data, "subsets", [])]
    metadata = getattr(c.data, "caption_metadata", "")
    in_images = c.data.train_data_dir and (Path(data_paths["train_data_dir"]) / metadata).is_file()
    if metadata and ((cwd / metadata).exists() or not in_images):  # else relative to the image folder: kept
        data_paths["caption_metadata"] = _absolute(metadata, cwd)
    mode = c.mode.model_copy(update={key: getattr(c.mode, key) and _absolute(getattr(c.mode, key), cwd)
                                     for key in ("original_image", "target_image", "first_pass_file")
                                     if key in type(c.mode).model_fields})
    sample = c.sample.model_copy(update={"prompts_file": c.sample.prompts_file and
                                         _absolute(c.sample.prompts_file, cwd)})
    # batch.working_dir is read only by `lorakit batch`: left at its default it stays relative to where that starts
    work = c.batch.working_dir
    batch = c.batch.model_copy(update={
        "working_dir": work if work == type(c.batch).model_fields["working_dir"].default else _absolute(work, cwd),
        "stage_dir": c.batch.stage_dir and _absolute(c.batch.stage_dir, cwd),
        "oom_file": c.batch.oom_file and _absolute(c.batch.oom_file, cwd),
        "add": [_layer_arg(a, cwd) for a in c.batch.add]})
    return c.model_copy(update={
        "model": model, "network": network, "data": c.data.model_copy(update=data_paths), "mode": mode, "sample": sample,
        "output": c.output.model_copy(update={"output_dir": _absolute(c.output.output_dir, cwd)}),
        "batch": batch})


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
    """Write config.toml, params.json and environment.json into `run_dir` (created if needed); paths in the
    config are written absolute (see `absolute_paths`)."""
    if isinstance(resolved, LorakitConfig):
        resolved = ResolvedConfig(resolved, {}, [])
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = absolute_paths(resolved.config)
    write_text_atomic(run_dir / "config.toml", config_toml(config))
    params = {
        "config": config.model_dump(mode="json"),
        "origins": resolved.origins,
        "layers": [layer.name for layer in resolved.layers],
        "notes": resolved.notes,
        "warnings": resolved.warnings,
    }
    write_text_atomic(run_dir / "params.json", json.dumps(params, indent=2, ensure_ascii=False) + "\n")
    write_text_atomic(run_dir / "environment.json", json.dumps(environment(), indent=2) + "\n")
