"""ImportResult (what an import produced, key by key) and the small helpers every importer module reads values with:
the schema lookups (field_info, has_field, literal_values) and the casts (cast, number, args_list, is_empty)."""

from __future__ import annotations

import shlex
import types
import typing
from dataclasses import dataclass, field
from typing import Annotated, Any

import tomli_w
from pydantic import TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

from .schema import CONFIG_VERSION, LorakitConfig


@dataclass
class ImportResult:
    """The lorakit values, and every source key that did not become one (with why)."""

    values: dict[str, Any] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)
    unmapped: list[tuple[str, Any, str]] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    inert_keys: list[tuple[str, Any, str]] = field(default_factory=list)  # set, but changes nothing kohya trains
    defaults: list[str] = field(default_factory=list)  # keys the source leaves out, at sd-scripts' default
    source: dict[str, Any] = field(default_factory=dict)  # the sd-scripts arguments being read
    strict_source: str | None = None  # while set (reading a dataset TOML), an unreadable value is an error
    tool: str = "kohya"  # whose run the import reproduces, for the messages
    defaults_of: str = "sd-scripts"  # whose defaults `defaults` are at
    to_fill: dict[str, str] = field(default_factory=dict)  # lorakit key → what the user must set (a preset's blank)

    def inert(self, source: str, value: Any, why: str) -> None:
        """A source key that changes nothing the run trains (logging, attention kernel, GUI-only)."""
        self.inert_keys.append((source, value, why))

    def unsupported(self, source: str, value: Any, need: str) -> None:
        """A source key the run depends on that lorakit cannot reproduce (what lorakit would need)."""
        self.unmapped.append((source, value, need))

    def report(self) -> dict[str, list[tuple[str, Any, str]]]:
        """Every source key in one of three groups: mapped (key, lorakit key), inert (key, value, why) and
        unsupported (key, value, what lorakit would need); keys left empty/off are inert."""
        mapped = [(k, None, v) for k, v in self.mapped.items() if not v.startswith("(inert: ")]
        inert = [(k, None, v[len("(inert: "):-1]) for k, v in self.mapped.items() if v.startswith("(inert: ")]
        listed = {k for k, _, _ in mapped + inert + self.inert_keys + self.unmapped}
        inert += self.inert_keys + [(k, None, "empty or off") for k in dict.fromkeys(self.empty) if k not in listed]
        return {"mapped": mapped, "inert": inert, "unsupported": list(self.unmapped)}

    def put(self, source: str, dotted: str, value: Any) -> None:
        """Set lorakit key `dotted` from source key `source`, cast to the field's type; else record why not."""
        info = field_info(dotted)
        if info is None:
            self.skip(source, value, f"no lorakit setting {dotted} yet")
            return
        try:
            value = cast(value, info.annotation)
            kind = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
            TypeAdapter(kind).validate_python(value, strict=False)
        except (TypeError, ValueError, ValidationError):
            from .loader import allowed

            self.bad(source, value, f"{dotted} takes {allowed(tuple(dotted.split('.')))}")
            return
        node = self.values
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        self.mapped[source] = dotted

    def bad(self, source: str, value: Any, reason: str) -> None:
        """A value that cannot be read: unmapped with the reason, or an error while reading a dataset TOML."""
        if self.strict_source:
            self.errors.append(f"{self.strict_source}: {source} = {value!r}: {reason}")
        else:
            self.unmapped.append((source, value, reason))

    def skip(self, source: str, value: Any, reason: str) -> None:
        """Record a source key that is not mapped; empty/off values go to the short list."""
        if is_empty(value):
            self.empty.append(source)
        else:
            self.unmapped.append((source, value, reason))

    def to_toml(self, source: str) -> str:
        """The lorakit TOML, with the unmapped keys listed in comments at the top."""
        head = [f"# Imported by `lorakit config import` from {source}."]
        if self.unmapped:
            head.append(f"# Unsupported: {self.tool} would use these, lorakit cannot (the run differs there):")
            head += [f"#   {k} = {v!r}: {why}" for k, v, why in self.unmapped]
        if self.defaults:
            head.append(f"# Not in the file, so at {self.defaults_of}'s defaults: " + ", ".join(self.defaults))
        head += [f"# Note: {n}" for n in self.notes]
        if self.to_fill:
            head.append("# Before training, set (the file leaves them blank):")
            head += [f"#   {key}: {what}" for key, what in self.to_fill.items()]
        return "\n".join(head) + "\n\n" + tomli_w.dumps({"version": CONFIG_VERSION, **self.values})


def is_empty(value: Any) -> bool:
    """'' / None / False / 0 / [] — a key that was left off."""
    return value in ("", None, False, 0, [], {})


def field_info(dotted: str) -> FieldInfo | None:
    """The schema field `dotted` (e.g. 'data.reg_data_dir'), or None if lorakit has no such key."""
    from .loader import model_at

    *parents, leaf = dotted.split(".")
    model = model_at(tuple(parents))  # [mode] is lora's section: imported configs train kohya's train_network
    return model.model_fields.get(leaf) if model is not None else None


def has_field(dotted: str) -> bool:
    """True if `dotted` (e.g. 'data.reg_data_dir') is a key of the lorakit schema."""
    return field_info(dotted) is not None


def cast(value: Any, kind: Any) -> Any:
    """`value` as type `kind` (int, float, bool, str, optional, list or tuple of them); ValueError if it is not one.

    Numbers and booleans written as strings ("1234", "2e-4", "true") are read; a float is an int only when whole.
    Literal choices are left to the validator.
    """
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return None if value is None else cast(value, args[0]) if len(args) == 1 else value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError("not a list")
        args = typing.get_args(kind)
        if origin is tuple and len(args) != len(value):
            raise ValueError(f"expected {len(args)} values")
        return [cast(v, args[i] if origin is tuple else args[0]) for i, v in enumerate(value)]
    if isinstance(value, bool) and kind in (int, float):
        raise ValueError("a boolean is not a number")
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() not in ("true", "false", "1", "0"):
            raise ValueError("not true or false")
        return str(value).strip().lower() in ("true", "1")
    if kind is int:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float) and number.is_integer():
            return int(number)
        if isinstance(number, int):
            return number
        raise ValueError("not a whole number")
    if kind is float:
        if not isinstance(value, (int, float, str)):
            raise ValueError("not a number")
        return float(value)
    if kind is str and not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError("not text")
    return value


def literal_values(dotted: str) -> tuple[Any, ...]:
    """The allowed values of a Literal field (empty if it is not one)."""
    section, name = dotted.split(".")
    ann = LorakitConfig.model_fields[section].annotation.model_fields[name].annotation  # type: ignore[union-attr]
    return typing.get_args(ann) if typing.get_origin(ann) is typing.Literal else ()


def number(value: Any) -> float | None:
    """A float from a number or numeric string ('' and None → None)."""
    try:
        return float(value) if value not in ("", None) else None
    except (TypeError, ValueError):
        return None


def args_list(value: Any) -> list[str]:
    """GUI 'a=1 b=2' strings or sd-scripts lists as a list of key=value strings."""
    if isinstance(value, list):
        return [str(v) for v in value]
    return shlex.split(str(value)) if value else []
