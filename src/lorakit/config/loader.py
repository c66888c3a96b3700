"""Read TOML layers, merge them (later wins), apply `--set a.b=c`, validate into `LorakitConfig`.

Layers, in order: a preset → the user's TOML files → `--add` files (each appends its stem to output_name) → the
out-of-memory fallback layer (retries only) → `--set`. Every problem is collected and reported at once with the
layer it came from, the key path, the value and what is allowed; an unknown key gets the nearest valid key.
"""

from __future__ import annotations

import difflib
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import annotated_types
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .migrate import migrate
from .presets import OOM_PRESET, preset_path
from .provenance import origins as compute_origins
from .schema import MODE_SECTIONS, LorakitConfig


@dataclass
class Layer:
    """One source of settings: a name for messages (a file path, 'preset:x', '--set') and its nested values."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class ResolvedConfig:
    """A validated config with where each value came from.

    `origins` maps every dotted key ("train.learning_rate") to the name of the layer that set it ("default" when
    none did); `notes` are migration messages; `warnings` are semantic findings that do not stop a run.
    """

    config: LorakitConfig
    origins: dict[str, str]
    layers: list[Layer]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


UTF8_BOM = b"\xef\xbb\xbf"


def read_toml(path: Path, name: str | None = None) -> Layer:
    """A TOML file as a migrated layer; a missing or malformed file is a ConfigError naming it."""
    label, skipped = name or str(path), 0
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data.startswith(UTF8_BOM):  # Windows editors add one; it is not part of the TOML
            data, skipped = data[len(UTF8_BOM):], len(UTF8_BOM)
        raw = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{path}: is a folder, expected a .toml file"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start + skipped}); save it as UTF-8"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read it: {exc.strerror or exc}"]) from None
    values, notes = migrate(raw, label)
    return Layer(label, values, notes)


def read_layer_arg(arg: str | Path, kind: str = "") -> Layer:
    """A layer named on the command line: an existing TOML file, else a shipped preset of that name."""
    path = Path(arg)
    prefix = f"{kind} " if kind else ""
    if path.exists() or len(path.parts) > 1:
        return read_toml(path, f"{prefix}{path}")
    try:
        return read_toml(preset_path(path.stem if path.suffix == ".toml" else str(arg)), f"{prefix}preset:{path.stem}")
    except ConfigError as exc:
        if path.suffix == ".toml":
            raise ConfigError([f"{path}: file not found (and no shipped preset '{path.stem}')"]) from None
        raise exc


def parse_value(text: str) -> Any:
    """A `--set` value as TOML would read it (numbers, booleans, lists, quoted strings); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def set_layer(assignments: Sequence[str]) -> Layer:
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
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                problems.append(f"--set {item!r}: '{p}' was already set to a value")
                break
            node = child
        else:
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


def model_at(path: tuple[Any, ...], mode_type: str = "lora") -> type[BaseModel] | None:
    """The pydantic model class that holds the key at `path` (for suggestions), if any; `[mode]` is the section
    of `mode_type`."""
    model: type[BaseModel] = LorakitConfig
    for part in path:
        info = model.model_fields.get(str(part))
        ann = MODE_SECTIONS.get(mode_type) if (model, part) == (LorakitConfig, "mode") else \
            getattr(info, "annotation", None)
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


def allowed(loc: tuple[Any, ...], mode_type: str = "lora") -> str:
    """What a field accepts, e.g. 'an integer, 1 ≤ value ≤ 1024' or "one of 'AdamW', 'Adafactor'"."""
    parent = model_at(loc[:-1], mode_type)
    info = parent.model_fields.get(str(loc[-1])) if parent else None
    if info is None:
        return ""
    ann = info.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    literal = next((a for a in [ann, *args] if typing.get_origin(a) is typing.Literal), None)
    if literal is not None:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(literal))
    base = args[0] if len(args) == 1 else ann
    if isinstance(base, type) and issubclass(base, BaseModel):
        return f"a table [{'.'.join(map(str, loc))}] of settings"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    kind = names.get(base, getattr(base, "__name__", str(base)).replace("list", "a list"))
    bounds = []
    for meta in info.metadata:
        for attr, sym in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"), ("min_length", "length ≥")):
            if isinstance(meta, getattr(annotated_types, attr.capitalize() if attr != "min_length" else "MinLen")):
                bounds.append(f"{sym} {getattr(meta, attr)}")
    optional = " (or unset)" if type(None) in typing.get_args(ann) else ""
    return f"{kind}{optional}" + (f", {' and '.join(bounds)}" if bounds else "")


# Names users bring from other tools → lorakit's key.
ALIASES = {
    "lr": "train.learning_rate", "unet_lr": "train.learning_rate", "epochs": "train.max_train_epochs",
    "epoch": "train.max_train_epochs", "batch_size": "train.train_batch_size", "rank": "network.network_dim",
    "dim": "network.network_dim", "alpha": "network.network_alpha", "optimizer": "train.optimizer_type",
    "steps": "train.max_train_steps", "max_resolution": "data.resolution",
    "model": "model.pretrained_model_name_or_path",
}


def _suggest(loc: tuple[Any, ...], mode_type: str = "lora") -> str | None:
    """Nearest valid dotted key for an unknown key: an alias, another mode's setting, the same section, then the
    same name elsewhere."""
    parent = model_at(loc[:-1], mode_type)
    leaf = str(loc[-1])
    if leaf in ALIASES:
        return ALIASES[leaf]
    if loc[:1] == ("mode",) and len(loc) == 2:
        owners = [t for t, section in MODE_SECTIONS.items() if leaf in section.model_fields]
        if owners:
            return f"it is a setting of mode '{owners[0]}', and this config's mode.type is '{mode_type}'"
    near = difflib.get_close_matches(leaf, list(parent.model_fields) if parent else [], n=1, cutoff=0.5)
    if near:
        return ".".join([*map(str, loc[:-1]), near[0]])
    best: tuple[float, str] | None = None
    for section, info in LorakitConfig.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            for name in model.model_fields:
                score = difflib.SequenceMatcher(None, leaf, name).ratio()
                if score >= 0.75 and (best is None or score > best[0]):
                    best = (score, f"{section}.{name}")
    return best[1] if best else None


def describe(exc: ValidationError, layers: list[Layer]) -> list[str]:
    """One actionable line per pydantic error: source, key path, value, what is allowed."""
    lines = []
    for err in exc.errors():
        loc, mode_type = tuple(err["loc"]), "lora"
        if loc[:1] == ("mode",) and len(loc) > 1 and loc[1] in MODE_SECTIONS:  # the union's tag is not a key
            loc, mode_type = ("mode", *loc[2:]), str(loc[1])
        dotted = ".".join(str(p) for p in loc) or "(config)"
        source = _owner(dotted, layers)
        if err["type"] == "union_tag_invalid" and loc == ("mode",):
            lines.append(f"{_owner('mode.type', layers)}: mode.type = {err['ctx']['tag']!r}: not a mode (allowed: "
                         f"{', '.join(repr(t) for t in MODE_SECTIONS)})")
        elif loc == ("mode",) and not isinstance(err.get("input"), dict):
            lines.append(f"{_owner('mode', layers)}: mode = {err.get('input')!r}: [mode] is a table; set "
                         f"mode.type (e.g. --set mode.type='ileco')")
        elif err["type"] == "extra_forbidden":
            near = _suggest(loc, mode_type)
            hint = (f"; {near}" if near.startswith("it is") else f"; did you mean '{near}'?") if near else ""
            lines.append(f"{source}: unknown key '{dotted}'{hint}")
        elif not loc:  # a rule across sections: no single layer to blame
            lines.append(f"config: {err['msg'].removeprefix('Value error, ')}")
        elif isinstance(err.get("input"), dict) or "input" not in err:  # a rule across one section's keys
            lines.append(f"{source}: {dotted}: {err['msg'].removeprefix('Value error, ')}")
        else:
            rule = allowed(loc, mode_type) if err["type"] != "literal_error" else ""
            lines.append(
                f"{source}: {dotted} = {err['input']!r}: {err['msg']}" + (f" (allowed: {rule})" if rule else "")
            )
    return lines


def merged_values(layers: list[Layer]) -> dict[str, Any]:
    """All layers merged in order, before validation."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = merge(merged, layer.values)
    return merged


def resolve(layers: list[Layer]) -> LorakitConfig:
    """Merge the layers in order and validate; raises ConfigError listing every problem."""
    try:
        return LorakitConfig.model_validate(merged_values(layers))
    except ValidationError as exc:
        raise ConfigError(describe(exc, layers)) from None


def _suffix_layer(layers: list[Layer], adds: list[Layer]) -> Layer | None:
    """The output_name with each `--add` file's stem appended (`x` + `lowlr.toml` → `x_lowlr`), as a layer."""
    if not adds:
        return None
    output = merged_values(layers).get("output", {})
    name = output.get("output_name", "lora") if isinstance(output, dict) else "lora"
    stems = [Path(a.name.split(" ", 1)[-1].removeprefix("preset:")).stem for a in adds]
    return Layer("--add suffix", {"output": {"output_name": "_".join([str(name), *stems])}})


def build_layers(
    preset: str | None = None,
    files: Sequence[str | Path] = (),
    adds: Sequence[str | Path] = (),
    oom: bool = False,
    sets: Sequence[str] = (),
) -> list[Layer]:
    """The ordered layers of a run; reading problems of every file are reported together."""
    layers: list[Layer] = []
    problems: list[str] = []

    def read(arg: str | Path, kind: str = "") -> Layer | None:
        try:
            return read_layer_arg(arg, kind)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return None

    if preset:
        layers += [x for x in [read(preset, "")] if x]
    layers += [x for x in (read_toml_arg(f, problems) for f in files) if x]
    add_layers = [x for x in (read(a, "--add") for a in adds) if x]
    layers += add_layers
    suffix = _suffix_layer(layers, add_layers)
    if suffix:
        layers.append(suffix)
    overrides: list[Layer] = []
    if sets:
        try:
            overrides.append(set_layer(sets))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if oom and not problems:  # batch.oom_file may come from --set, so look at every layer
        layers += [x for x in [read(_oom_source(layers + overrides), "oom")] if x]
    if problems:
        raise ConfigError(problems)
    return layers + overrides


def read_toml_arg(path: str | Path, problems: list[str]) -> Layer | None:
    """A user TOML file as a layer, recording a reading problem instead of raising."""
    try:
        return read_toml(Path(path))
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None


def _oom_source(layers: list[Layer]) -> str:
    """Where the out-of-memory layer comes from: batch.oom_file, else the shipped preset."""
    batch = merged_values(layers).get("batch", {})
    oom_file = batch.get("oom_file") if isinstance(batch, dict) else None
    return str(oom_file or OOM_PRESET)


def resolve_layers(
    preset: str | None = None,
    files: Sequence[str | Path] = (),
    adds: Sequence[str | Path] = (),
    oom: bool = False,
    sets: Sequence[str] = (),
    *,
    check_paths: bool = False,
    machine: str = "error",
) -> ResolvedConfig:
    """Resolve a run's config from its layers, validate it, and record where each value came from.

    preset: a shipped preset name or a TOML path (lowest layer). files: the user's TOMLs (`--config`, later wins).
    adds: `--add` TOMLs or preset names, each appending its stem to output.output_name. oom: apply the
    out-of-memory fallback layer (batch.oom_file or the shipped `oom-fallback`). sets: `--set a.b=c` overrides.
    check_paths: also check that input paths exist, outputs are writable and this machine has what the run needs
    (do it before training); machine = "warn" reports the machine's shortcomings as warnings (`lorakit plan`).
    Raises ConfigError with every problem found; warnings come back in `.warnings`.
    """
    return resolve_checked(build_layers(preset, files, adds, oom, sets), check_paths=check_paths, machine=machine)


def resolve_checked(layers: list[Layer], check_paths: bool = False, machine: str = "error") -> ResolvedConfig:
    """Validate ordered layers (schema, then semantic checks) into a ResolvedConfig with origins."""
    from .validate import check

    try:
        config = resolve(layers)
    except ConfigError as exc:
        raise ConfigError(exc.problems + _argument_problems(layers)) from None
    origin = compute_origins(config.model_dump(), [(x.name, x.values) for x in layers])
    errors, warnings = check(config, paths=check_paths, machine=machine)
    if errors:
        raise ConfigError([f"{origin.get(f.key, 'config')}: {f.key}: {f.message}" for f in errors])
    notes = [n for layer in layers for n in layer.notes]
    shown = [f"{origin.get(f.key, 'config')}: {f.key}: {f.message}" for f in warnings]
    return ResolvedConfig(config, origin, layers, notes, shown)


def _argument_problems(layers: list[Layer]) -> list[str]:
    """optimizer/scheduler argument problems even when another part of the config is invalid (all errors at once)."""
    from .schema import TrainSection
    from .optimizer_rules import check_arguments

    train = merged_values(layers).get("train", {})
    try:
        section = TrainSection.model_validate(train if isinstance(train, dict) else {})
    except ValidationError:
        return []  # the train section's own errors are already listed
    found = check_arguments(LorakitConfig.model_construct(train=section))
    return [f"{_owner(f.key, layers)}: {f.key}: {f.message}" for f in found if f.error]


def load_config(files: list[Path] | None = None, sets: list[str] | None = None) -> LorakitConfig:
    """The config from TOML files (later wins) and `--set` overrides."""
    return resolve_layers(files=files or [], sets=sets or []).config
