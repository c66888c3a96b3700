"""Read TOML layers, merge them (later wins), apply `--set a.b=c`, validate into `LorakitConfig`.

Every problem is collected and reported at once with the file, the key path and, for unknown keys, the nearest
valid key.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .schema import LorakitConfig


@dataclass
class Layer:
    """One source of settings: a name for messages (a file path, 'preset:x', '--set') and its nested values."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)


def read_toml(path: Path) -> Layer:
    """A TOML file as a layer; a missing or malformed file is a ConfigError naming it."""
    try:
        with open(path, "rb") as f:
            return Layer(str(path), tomllib.load(f))
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None


def parse_value(text: str) -> Any:
    """A `--set` value as TOML would read it (numbers, booleans, lists, quoted strings); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_layer(assignments: list[str]) -> Layer:
    """`["train.learning_rate=1e-4", ...]` as a layer."""
    values: dict[str, Any] = {}
    problems = []
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-4")
            continue
        node = values
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = parse_value(raw.strip())
    if problems:
        raise ConfigError(problems)
    return Layer("--set", values)


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Deep merge of nested dicts; `over` wins; lists are replaced, not appended."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _model_at(path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at `path` (for suggestions), if any."""
    model: type[BaseModel] = LorakitConfig
    for part in path:
        info = model.model_fields.get(str(part))
        ann = getattr(info, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _owner(dotted: str, layers: list[Layer]) -> str:
    """Name of the last layer that sets `dotted` (the one the value came from)."""
    for layer in reversed(layers):
        node: Any = layer.values
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return layer.name
    return "defaults"


def describe(exc: ValidationError, layers: list[Layer]) -> list[str]:
    """One actionable line per pydantic error: source, key path, value, what is allowed."""
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc) or "(config)"
        source = _owner(dotted, layers)
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            valid = list(parent.model_fields) if parent else []
            near = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"; did you mean '{'.'.join([*map(str, loc[:-1]), near[0]])}'?" if near else ""
            lines.append(f"{source}: unknown key '{dotted}'{hint}")
        elif "input" in err and loc:
            lines.append(f"{source}: {dotted} = {err['input']!r}: {err['msg']}")
        else:
            lines.append(f"{source}: {err['msg'].removeprefix('Value error, ')}")
    return lines


def resolve(layers: list[Layer]) -> LorakitConfig:
    """Merge the layers in order and validate; raises ConfigError listing every problem."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer.values)
    try:
        return LorakitConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe(exc, layers)) from None


def load_config(files: list[Path] | None = None, sets: list[str] | None = None) -> LorakitConfig:
    """The config from TOML files (later wins) and `--set` overrides."""
    layers = [read_toml(Path(f)) for f in files or []]
    if sets:
        layers.append(set_layer(sets))
    return resolve(layers)
