"""The simple form sets exactly the keys it names and keeps the preset's value for every other key."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from lorakit.config.loader import resolve_layers
from lorakit.config.schema import LorakitConfig
from lorakit.config.simple import SIMPLE_FIELDS, SimpleForm, resolve_simple

FILLED = dict(model="org/base-model", images="imgs", trigger_word="sks", rank=12, alpha=6.0, learning_rate=3e-4,
              train_text_encoder=True, text_encoder_lr=2e-5, epochs=9, batch_size=3, resolution=640,
              output_name="mine", output_dir="elsewhere", save_every_n_steps=50, seed=1234)


def schema_leaves(model: type[BaseModel] = LorakitConfig, prefix: str = "") -> list[str]:
    """Every field of the schema as a dotted key, recursively."""
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += schema_leaves(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def value_at(cfg: LorakitConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def test_every_form_field_is_bound_to_a_real_key() -> None:
    leaves = set(schema_leaves())
    assert set(SIMPLE_FIELDS) == set(FILLED)
    assert set(SIMPLE_FIELDS.values()) <= leaves
    assert len(set(SIMPLE_FIELDS.values())) == len(SIMPLE_FIELDS)  # no two fields write one key
    assert 13 <= len(SIMPLE_FIELDS) <= 20


@pytest.mark.parametrize("preset", ["sd15-character", "sdxl-style", "sd21-floorplan"])
def test_form_sets_or_keeps_every_schema_field(preset: str) -> None:
    base = resolve_layers(preset).config
    filled = resolve_simple(SimpleForm(preset=preset, **FILLED)).config
    empty = resolve_simple(SimpleForm(preset=preset)).config
    bound = {key: name for name, key in SIMPLE_FIELDS.items()}
    leaves = schema_leaves()
    assert len(leaves) > 100  # the walk really is over the whole schema
    for key in leaves:
        assert value_at(empty, key) == value_at(base, key), f"{key}: an empty form changed the preset"
        expected = FILLED[bound[key]] if key in bound else value_at(base, key)
        assert value_at(filled, key) == expected, f"{key}: dropped or changed by the simple form"


def test_form_values_are_validated_and_origins_name_the_form() -> None:
    r = resolve_simple(SimpleForm(rank=7), sets=["train.seed=5"])
    assert r.origins["network.network_dim"] == "simple form"
    assert r.origins["train.seed"] == "--set"
    assert r.origins["train.max_train_epochs"] == "preset:sd15-character"
    from lorakit.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        resolve_simple(SimpleForm(rank=0))
    assert exc.value.problems[0].startswith("simple form: network.network_dim = 0")
    with pytest.raises(Exception):
        SimpleForm(rnak=3)  # unknown form fields are errors too
