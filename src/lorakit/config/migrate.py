"""Config file versions and the migrations between them.

Every config file carries `version`. A file without one is read as the current version, unless it uses the old
flat layout (version 0: every key at the top level, as sd-scripts' own config files write them), which is moved
into sections. Each migration returns the new values and a message for the user; a test covers each one.
"""

from __future__ import annotations

from typing import Any, Callable

from pydantic import BaseModel

from .schema import CONFIG_VERSION, LorakitConfig

# Flat keys that exist in more than one section go to this one (the training setting, not the sampling one).
_PREFERRED_SECTION = {"seed": "train", "steps": "sample", "prompt": "sample"}


def _sections() -> dict[str, type[BaseModel]]:
    """Section name → section model, for every section of the schema."""
    out: dict[str, type[BaseModel]] = {}
    for name, info in LorakitConfig.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out[name] = ann
    return out


def section_of(key: str) -> str | None:
    """The section that owns a field called `key` (the preferred one when several do), or None."""
    if key in _PREFERRED_SECTION:
        return _PREFERRED_SECTION[key]
    for name, model in _sections().items():
        if key in model.model_fields:
            return name
    return None


def detect_version(values: dict[str, Any]) -> int:
    """The version a file was written in: its `version` key, 0 for the flat layout, else the current one."""
    if "version" in values:
        return values["version"] if isinstance(values["version"], int) else CONFIG_VERSION
    sections = _sections()
    flat = [k for k, v in values.items() if k not in sections and section_of(k) is not None]
    return 0 if flat else CONFIG_VERSION


def v0_to_v1(values: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Version 0 (flat keys, e.g. `learning_rate = 1e-4` at the top) → version 1 (`[train] learning_rate`).

    Tables already in the file are kept and the flat keys merged into them; a key set both ways keeps the table's
    value (and the message says so).
    """
    sections = _sections()
    flat = {k: v for k, v in values.items() if k not in sections and k != "version" and section_of(k) is not None}
    out: dict[str, Any] = {k: dict(v) if isinstance(v, dict) else v
                           for k, v in values.items() if k not in flat and k != "version"}
    moved: list[str] = []
    both: list[str] = []
    for key, value in flat.items():
        target = section_of(key)
        table = out.setdefault(target, {})
        if not isinstance(table, dict):
            out[key] = value  # left in place: the validator reports the section that is not a table
        elif key in table:
            both.append(f"{key} is set at the top and in [{target}]: the [{target}] value is kept")
        else:
            table[key] = value
            moved.append(f"{key} → {target}.{key}")
    out["version"] = 1
    shown = ", ".join(moved[:4]) + (f", … ({len(moved)} keys)" if len(moved) > 4 else "")
    return out, f"flat layout moved into sections ({shown})" + "".join(f"; {b}" for b in both)


MIGRATIONS: dict[int, Callable[[dict[str, Any]], tuple[dict[str, Any], str]]] = {0: v0_to_v1}


def migrate(values: dict[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    """Bring a file's values up to the current version; returns them and one message per migration applied."""
    version = detect_version(values)
    notes: list[str] = []
    while version < CONFIG_VERSION and version in MIGRATIONS:
        values, what = MIGRATIONS[version](values)
        notes.append(
            f"{source}: migrated config version {version} → {version + 1}: {what}. "
            f"Save the new form with `lorakit config migrate {source}`."
        )
        version += 1
    return values, notes
