"""The config as form fields, generated from the schema: pure (no gradio), so tests walk it against the schema.

Each leaf of `LorakitConfig` becomes one `FieldSpec` whose `kind` picks the widget (bool → checkbox, a closed set
of values → dropdown, int/float → number, a list → one item per line, a list of tables → one TOML inline table
per line, anything else → text). [mode] is a `mode.type` dropdown plus every mode's own fields, keyed
`mode(<type>).<field>`; only the chosen mode's fields go into the config.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

from ..config.loader import Layer
from ..config.schema import MODE_SECTIONS, LorakitConfig
from ..errors import ConfigError

Kind = Literal["bool", "choice", "int", "float", "list", "tables", "text"]
MODE_TYPE_KEY = "mode.type"


@dataclass(frozen=True)
class FieldSpec:
    """One form field: `key` names it in the form, `path` is where its value goes in the config."""

    key: str
    path: tuple[str, ...]
    kind: Kind
    default: Any = None
    optional: bool = False
    choices: tuple[Any, ...] = ()  # the schema's values for "choice"
    item: type | None = None  # the item type of "list"; the table model of "tables"
    scalars: tuple[type, ...] = ()  # what a "text" field may hold besides str (e.g. int | "auto")
    mode: str | None = None  # the mode type this field belongs to

    @property
    def section(self) -> str:
        return self.path[0]

    @property
    def name(self) -> str:
        """The field's name inside its section (nested tables joined with dots)."""
        return ".".join(self.path[1:])

    @property
    def choice_labels(self) -> list[str]:
        return ([""] if self.optional else []) + [to_text(c) for c in self.choices]


def to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _strip_optional(ann: Any) -> tuple[Any, bool]:
    args = typing.get_args(ann)
    if typing.get_origin(ann) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return ann, False


def _base(ann: Any) -> Any:
    return typing.get_args(ann)[0] if typing.get_origin(ann) is typing.Annotated else ann


def _spec(key: str, path: tuple[str, ...], ann: Any, default: Any, mode: str | None) -> FieldSpec:
    ann, optional = _strip_optional(_base(ann))
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    common = dict(key=key, path=path, default=default, optional=optional, mode=mode)
    if ann is bool:
        return FieldSpec(kind="choice", choices=(True, False), **common) if optional else \
            FieldSpec(kind="bool", **common)
    if origin is Literal:
        return FieldSpec(kind="choice", choices=args, **common)
    if ann is int or ann is float:
        return FieldSpec(kind="int" if ann is int else "float", **common)
    if origin in (list, tuple):
        item = _base(args[0])
        if isinstance(item, type) and issubclass(item, BaseModel):
            return FieldSpec(kind="tables", item=item, **common)
        return FieldSpec(kind="list", item=item if item in (int, float) else str, **common)
    scalars = tuple(t for t in (int, float) if any(_base(a) is t for a in args))
    return FieldSpec(kind="text", scalars=scalars, **common)


def _walk(model: type[BaseModel], prefix: str, path: tuple[str, ...], mode: str | None) -> list[FieldSpec]:
    out: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if model is LorakitConfig and name == "mode":
            out.append(FieldSpec(MODE_TYPE_KEY, ("mode", "type"), "choice", "lora", choices=tuple(MODE_SECTIONS)))
            for mode_type, section in MODE_SECTIONS.items():
                out += [s for s in _walk(section, f"mode({mode_type}).", ("mode",), mode_type) if s.name != "type"]
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _walk(ann, f"{prefix}{name}.", path + (name,), mode)
        else:
            default = info.get_default(call_default_factory=True)
            out.append(_spec(f"{prefix}{name}", path + (name,), ann, default, mode))
    return out


def fields_of(model: type[BaseModel] = LorakitConfig) -> list[FieldSpec]:
    """Every leaf field of the schema as a form field, in schema order."""
    return _walk(model, "", (), None)


# --- config → form values ---------------------------------------------------------------------------------------

def _inline_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_inline_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def inline_table(values: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_inline_value(v)}" for k, v in values.items() if v is not None) + " }"


def widget_value(spec: FieldSpec, value: Any) -> Any:
    """A config value as its widget shows it."""
    if spec.kind == "bool":
        return bool(value)
    if spec.kind in ("int", "float"):
        return value
    if spec.kind == "list":
        return "\n".join(to_text(v) for v in value or [])
    if spec.kind == "tables":
        return "\n".join(inline_table(v.model_dump() if isinstance(v, BaseModel) else dict(v)) for v in value or [])
    return to_text(value)


def _get(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        data = getattr(data, part)
    return data


def values_from_config(specs: list[FieldSpec], config: LorakitConfig) -> dict[str, Any]:
    """Form key → widget value for a whole config; the fields of the modes not chosen show their defaults."""
    out = {}
    for spec in specs:
        if spec.mode is not None and spec.mode != config.mode.type:
            value = _get(MODE_SECTIONS[spec.mode](**_mode_defaults(spec.mode)), spec.path[1:])
            required = spec.path[1:] in [(k,) for k in _mode_defaults(spec.mode)]  # shown empty: the user fills it
            out[spec.key] = widget_value(spec, "" if required else value)
        else:
            out[spec.key] = widget_value(spec, _get(config, spec.path))
    return out


def _mode_defaults(mode_type: str) -> dict[str, Any]:
    """Values a mode section needs to be built on its own (ileco requires a prompt)."""
    return {"original_prompt": "?"} if mode_type == "ileco" else {}


# --- form values → config ---------------------------------------------------------------------------------------

def _number(text: str, kind: type) -> int | float:
    return int(text) if kind is int else float(text)


def _scalar_text(spec: FieldSpec, text: str) -> Any:
    for kind in spec.scalars:
        try:
            return _number(text, kind)
        except ValueError:
            continue
    return text


def parse_value(spec: FieldSpec, value: Any) -> tuple[bool, Any]:
    """(present, config value) of one widget value; ValueError names what is wrong with it."""
    if spec.kind == "bool":
        return True, bool(value)
    if spec.kind in ("int", "float"):
        if value is None or value == "":
            if spec.optional:
                return False, None
            raise ValueError("a number is needed")
        number = float(value)
        if spec.kind == "int":
            if number != int(number):
                raise ValueError(f"{value} is not a whole number")
            return True, int(number)
        return True, number
    if spec.kind == "choice":
        if value in (None, "") and spec.optional:
            return False, None
        for choice in spec.choices:
            if to_text(choice) == to_text(value):
                return True, choice
        raise ValueError(f"'{value}' is not one of {', '.join(spec.choice_labels)}")
    text = "" if value is None else str(value)
    if spec.kind == "list":
        items = [x.strip() for line in text.splitlines() for x in (line.split(",") if spec.item is not str else [line])]
        items = [x for x in items if x]
        if not items and spec.optional:
            return False, None
        try:
            return True, [_number(x, spec.item) if spec.item in (int, float) else x for x in items]
        except ValueError:
            raise ValueError(f"every item must be a {spec.item.__name__}") from None
    if spec.kind == "tables":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        try:
            return True, [tomllib.loads(f"x = {line}")["x"] for line in lines]
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"each line must be a TOML inline table like {{ key = \"value\" }} ({exc})") from None
    if text.strip() == "" and spec.optional:
        return False, None
    return True, _scalar_text(spec, text.strip()) if spec.scalars else text


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


def config_from_values(specs: list[FieldSpec], values: dict[str, Any]) -> dict[str, Any]:
    """The nested config (as a TOML file holds it) of the form's values: only the chosen mode's fields; unset
    optional fields are left out. Widget values that cannot be read are a ConfigError naming every key."""
    mode_type = values.get(MODE_TYPE_KEY) or "lora"
    chosen = [s for s in specs if (s.mode is None or s.mode == mode_type) and s.key in values]
    return _nested(chosen, values, "form")


def _nested(specs: list[FieldSpec], values: dict[str, Any], where: str) -> dict[str, Any]:
    """`values` of `specs` as a nested config; every value that cannot be read is named in one ConfigError."""
    data: dict[str, Any] = {}
    problems = []
    for spec in specs:
        try:
            present, value = parse_value(spec, values[spec.key])
        except ValueError as exc:
            problems.append(f"{where}: {spec.key}: {exc}")
            continue
        if present:
            _put(data, spec.path, value)
    if problems:
        raise ConfigError(problems, "correct the fields named and try again")
    return data


def form_layer(specs: list[FieldSpec], values: dict[str, Any]) -> Layer:
    return Layer("form", config_from_values(specs, values))


# --- the Simple tab ----------------------------------------------------------------------------------------------

# The Simple tab's fields: each is one config key; an empty field keeps the preset's value.
SIMPLE_KEYS = (
    "model.pretrained_model_name_or_path", "data.train_data_dir", "output.output_name", "network.network_module",
    "network.network_dim", "network.network_alpha", "train.learning_rate", "train.max_train_steps",
    "train.max_train_epochs", "train.train_batch_size", "data.resolution", "train.mixed_precision",
    "train.optimizer_type", "train.lr_scheduler", "train.seed", "output.save_every_n_steps", "sample.prompts",
)


def simple_specs(specs: list[FieldSpec] | None = None) -> list[FieldSpec]:
    by_key = {s.key: s for s in specs or fields_of()}
    return [by_key[key] for key in SIMPLE_KEYS]


def simple_layer(values: dict[str, Any]) -> Layer:
    """The Simple tab's values as a layer over the preset: empty fields are left out, so the preset's stay."""
    def empty(value: Any) -> bool:
        return value is None or (isinstance(value, str) and not value.strip())

    filled = [s for s in simple_specs() if not empty(values.get(s.key))]
    return Layer("simple form", _nested(filled, values, "simple form"))
