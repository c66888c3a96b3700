"""Shipped presets: TOML layers installed as package data under `lorakit/presets/`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ..errors import ConfigError

OOM_PRESET = "oom-fallback"


def preset_dir() -> Path:
    """The folder holding the shipped preset TOMLs (inside the installed package)."""
    return Path(str(resources.files("lorakit") / "presets"))


def list_presets() -> dict[str, str]:
    """Preset name → its one-line description (the file's first comment line)."""
    out = {}
    for path in sorted(preset_dir().glob("*.toml")):
        first = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
        out[path.stem] = first.lstrip("# ").strip()
    return out


def preset_path(name: str) -> Path:
    """Path of a shipped preset by name (with or without `.toml`); ConfigError naming the valid ones."""
    path = preset_dir() / f"{name.removesuffix('.toml')}.toml"
    if not path.is_file():
        import difflib

        names = list(list_presets())
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.4)
        hint = f"; did you mean '{near[0]}'?" if near else ""
        raise ConfigError([f"unknown preset '{name}'{hint} (shipped: {', '.join(names)})"])
    return path
