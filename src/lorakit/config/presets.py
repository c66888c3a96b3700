"""Presets: TOML layers shipped as package data under `lorakit/presets/`, and the user's own under
`<lorakit home>/presets/` (saved from the web UI, or written there by `lorakit config import`)."""

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


def user_presets_dir(home: Path) -> Path:
    """`<home>/presets`, created on first use: the web UI saves presets here and lists them, as do the ComfyUI nodes."""
    folder = Path(home) / "presets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def saved_presets(home: Path) -> list[Path]:
    """The user's presets (their files, which the loader reads as a config layer), by name."""
    return sorted(user_presets_dir(home).glob("*.toml"))
