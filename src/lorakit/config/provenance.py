"""Which layer set each resolved value (`lorakit config show --origin`)."""

from __future__ import annotations

from typing import Any

DEFAULT_ORIGIN = "default"


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as `{"train.learning_rate": 1e-4, ...}`; lists and scalars are leaves."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def origins(resolved: dict[str, Any], layers: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
    """Dotted key → name of the last layer that set it, for every leaf of `resolved` ('default' if none did)."""
    setter: dict[str, str] = {}
    for name, values in layers:
        for dotted in flatten(values):
            setter[dotted] = name
    return {dotted: setter.get(dotted, DEFAULT_ORIGIN) for dotted in flatten(resolved)}
