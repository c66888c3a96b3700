"""The committed config reference matches the schema."""

from __future__ import annotations

from pathlib import Path

from lorakit.config.docs import render
from lorakit.config.schema import LorakitConfig

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "config.md"


def test_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render(), "run `python -m lorakit.config.docs`"


def test_reference_lists_every_field_with_its_description() -> None:
    text = render()
    for section, info in LorakitConfig.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and hasattr(model, "model_fields"):
            assert f"## [{section}]" in text
            for name, field in model.model_fields.items():
                assert field.description, f"{section}.{name} has no description"
                assert f"| `{name}` |" in text
    assert "| `network_dim` | int (≥ 1, ≤ 1024) | `16` | LoRA rank (dim). |" in text
