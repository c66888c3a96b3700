"""The UI's config form covers every schema field, its Simple tab sets only real keys over a preset, and a preset
survives the trip config → form values → config unchanged."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from lorakit.config.loader import Layer, build_layers, resolve, resolve_checked
from lorakit.config.presets import list_presets
from lorakit.config.schema import MODE_SECTIONS, LorakitConfig
from lorakit.errors import ConfigError
from lorakit.ui.form import (MODE_TYPE_KEY, SIMPLE_KEYS, config_from_values, fields_of, simple_layer, simple_specs,
                             values_from_config)


def leaves(model: type[BaseModel] = LorakitConfig, prefix: str = "") -> set[str]:
    """Every leaf key of the schema, walked on its own as tests/config/test_every_field.py leaves() does: a mode's
    fields as `mode(<type>).<field>`, a list of tables by the list's key and its items' `key[].field`."""
    out = set()
    for name, info in model.model_fields.items():
        ann = info.annotation
        item = typing.get_args(ann)[0] if typing.get_origin(ann) is list else None
        if model is LorakitConfig and name == "mode":
            for mode_type, section in MODE_SECTIONS.items():
                out |= leaves(section, f"mode({mode_type}).")
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= leaves(ann, f"{prefix}{name}.")
        elif isinstance(item, type) and issubclass(item, BaseModel):
            out |= {f"{prefix}{name}"} | leaves(item, f"{prefix}{name}[].")
        else:
            out.add(f"{prefix}{name}")
    return out


def test_form_covers_every_schema_field() -> None:
    form_keys = {spec.key for spec in fields_of()}
    table_lists = {spec.key for spec in fields_of() if spec.kind == "tables"}
    missing = set()
    for key in leaves():
        if key.startswith("mode(") and key.endswith(").type"):
            key = MODE_TYPE_KEY  # one dropdown picks the mode
        elif "[]." in key:
            key = key.split("[].")[0]  # a list of tables is one field, a TOML inline table per line
            assert key in table_lists, key
        if key not in form_keys:
            missing.add(key)
    assert not missing, f"schema fields without a form field: {sorted(missing)}"
    assert len(form_keys) == len(fields_of()), "two form fields share a key"


def test_widget_kinds_follow_the_types() -> None:
    by_key = {spec.key: spec for spec in fields_of()}
    assert by_key["network.train_text_encoder"].kind == "bool"
    assert by_key["model.v_parameterization"].kind == "choice"  # bool | None: unset, true or false
    assert by_key["train.optimizer_type"].kind == "choice"
    assert "Prodigy" in by_key["train.optimizer_type"].choices
    assert by_key["network.network_dim"].kind == "int"
    assert by_key["train.learning_rate"].kind == "float"
    assert by_key["sample.prompts"].kind == "list"
    assert by_key["data.subsets"].kind == "tables"
    assert by_key["data.train_data_dir"].kind == "text"
    assert by_key[MODE_TYPE_KEY].choices == tuple(MODE_SECTIONS)


@pytest.mark.parametrize("preset", sorted(list_presets()))
def test_preset_round_trips_through_the_form(preset: str) -> None:
    config = resolve(build_layers(preset=preset))
    specs = fields_of()
    again = resolve([Layer("form", config_from_values(specs, values_from_config(specs, config)))])
    assert again.model_dump() == config.model_dump()


def test_only_the_chosen_mode_goes_into_the_config() -> None:
    specs = fields_of()
    values = values_from_config(specs, resolve(build_layers(preset="ileco-erase")))
    assert config_from_values(specs, values)["mode"]["type"] == "ileco"
    values[MODE_TYPE_KEY] = "lora"
    mode = config_from_values(specs, values)["mode"]
    assert set(mode) == {"type", "prior_loss_weight"}  # LoraModeSection's fields, nothing of ileco's


def test_unreadable_form_values_name_their_keys() -> None:
    specs = fields_of()
    values = values_from_config(specs, LorakitConfig())
    values["network.block_dims"] = "1, x"
    values["network.network_dim"] = 2.5
    with pytest.raises(ConfigError) as caught:
        config_from_values(specs, values)
    assert [p.split(":")[1].strip() for p in caught.value.problems] == ["network.network_dim", "network.block_dims"]


def _dotted(data: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_simple_fields_are_real_keys() -> None:
    assert 14 <= len(SIMPLE_KEYS) <= 18
    schema = leaves()
    assert all(key in schema for key in SIMPLE_KEYS)
    assert [s.key for s in simple_specs()] == list(SIMPLE_KEYS)


def test_simple_form_changes_its_keys_and_keeps_the_rest_of_the_preset() -> None:
    preset = "sd15-character"
    base = _dotted(resolve(build_layers(preset=preset)).model_dump())
    values = {"network.network_dim": 8, "train.learning_rate": 3e-4, "train.optimizer_type": "Lion",
              "sample.prompts": "a cat\na dog", "output.output_name": "", "train.seed": None}
    layer = simple_layer(values)
    assert layer.values == {"network": {"network_dim": 8}, "train": {"learning_rate": 3e-4, "optimizer_type": "Lion"},
                            "sample": {"prompts": ["a cat", "a dog"]}}  # empty fields keep the preset's value
    after = _dotted(resolve_checked(build_layers(preset=preset) + [layer]).config.model_dump())
    changed = {key for key in base if after[key] != base[key]}
    assert changed == {"network.network_dim", "train.learning_rate", "train.optimizer_type", "sample.prompts"}


def test_a_mode_switched_to_in_the_form_starts_without_invented_values() -> None:
    """Loaded from a LoRA preset, iLECO's required prompt is empty, not a placeholder: switching the form to iLECO
    without writing one is refused instead of training on a made-up prompt."""
    specs = fields_of()
    values = values_from_config(specs, resolve(build_layers(preset="sd15-style")))
    key = next(s.key for s in specs if s.mode == "ileco" and s.path[-1] == "original_prompt")
    assert values[key] == ""
    values[MODE_TYPE_KEY] = "ileco"
    with pytest.raises((ConfigError, ValueError)):
        resolve_checked([Layer("form", config_from_values(specs, values))])


def test_presets_saved_from_the_ui_are_listed_and_load(tmp_path) -> None:
    from lorakit.errors import LorakitError
    from lorakit.ui.train_tab import preset_choices, save_preset

    resolved = resolve_checked(build_layers(preset="sd15-style"))
    path = save_preset(tmp_path, "mine", resolved)
    assert path == tmp_path / "presets" / "mine.toml"
    assert ("mine (saved)", str(path)) in preset_choices(tmp_path)
    assert resolve(build_layers(preset=str(path))) == resolved.config  # the saved preset loads as it was
    with pytest.raises(LorakitError, match="already exists"):
        save_preset(tmp_path, "mine", resolved)
    with pytest.raises(LorakitError, match="a plain name"):
        save_preset(tmp_path, "../elsewhere", resolved)
    assert sorted(p.name for p in tmp_path.rglob("*.toml")) == ["mine.toml"]
