"""Every config migration, with the message the user sees."""

from __future__ import annotations

from pathlib import Path

from lorakit.config.loader import read_toml, resolve_layers
from lorakit.config.migrate import CONFIG_VERSION, MIGRATIONS, detect_version, migrate, v0_to_v1


def test_every_version_below_current_has_a_migration() -> None:
    assert sorted(MIGRATIONS) == list(range(0, CONFIG_VERSION))


def test_v0_flat_layout_moves_into_sections() -> None:
    flat = {"learning_rate": 2e-4, "network_dim": 8, "train_data_dir": "imgs", "seed": 3, "output_name": "old",
            "sample": {"prompt": "a cat"}}
    assert detect_version(flat) == 0
    values, what = v0_to_v1(flat)
    assert values == {
        "train": {"learning_rate": 2e-4, "seed": 3},
        "network": {"network_dim": 8},
        "data": {"train_data_dir": "imgs"},
        "output": {"output_name": "old"},
        "sample": {"prompt": "a cat"},
        "version": 1,
    }
    assert "learning_rate → train.learning_rate" in what


def test_v0_file_loads_with_a_message(tmp_path: Path) -> None:
    f = tmp_path / "old.toml"
    f.write_text("learning_rate = 2e-4\nnetwork_dim = 8\nmax_train_epochs = 3\n", encoding="utf-8")
    layer = read_toml(f)
    assert layer.notes == [
        f"{f}: migrated config version 0 → 1: flat layout moved into sections (learning_rate → "
        "train.learning_rate, network_dim → network.network_dim, max_train_epochs → train.max_train_epochs). "
        f"Save the new form with `lorakit config migrate {f}`."
    ]
    r = resolve_layers(files=[f])
    assert (r.config.train.learning_rate, r.config.network.network_dim, r.config.train.max_train_epochs) == (2e-4, 8, 3)
    assert r.notes == layer.notes
    assert r.origins["train.learning_rate"] == str(f)


def test_explicit_version_0_and_unknown_flat_key() -> None:
    values, notes = migrate({"version": 0, "learning_rate": 1e-4, "lerning_rate": 1}, "x.toml")
    assert values["version"] == 1 and values["train"] == {"learning_rate": 1e-4}
    assert values["lerning_rate"] == 1  # left in place: the validator reports it with a suggestion
    assert len(notes) == 1


def test_current_files_are_untouched() -> None:
    values = {"version": 1, "train": {"learning_rate": 1e-4}}
    assert migrate(dict(values), "x.toml") == (values, [])
    assert detect_version({"train": {"seed": 1}}) == CONFIG_VERSION


def test_newer_version_is_an_error(tmp_path: Path) -> None:
    import pytest

    from lorakit.errors import ConfigError

    f = tmp_path / "new.toml"
    f.write_text("version = 99\n", encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        resolve_layers(files=[f])
    assert f"{f}: version = 99" in exc.value.problems[0] and f"≤ {CONFIG_VERSION}" in exc.value.problems[0]


def test_v0_flat_keys_and_a_table_of_the_same_section_are_merged() -> None:
    values, notes = migrate({"learning_rate": 2e-4, "seed": 5, "max_train_epochs": 2,
                             "train": {"max_train_epochs": 3}}, "x.toml")
    assert values["train"] == {"learning_rate": 2e-4, "seed": 5, "max_train_epochs": 3}  # the table wins
    assert "max_train_epochs" not in values
    assert "max_train_epochs is set at the top and in [train]: the [train] value is kept" in notes[0]


def test_v0_merge_does_not_change_the_input() -> None:
    src = {"seed": 5, "train": {"learning_rate": 1e-4}}
    values, _ = v0_to_v1(src)
    assert values["train"] == {"learning_rate": 1e-4, "seed": 5}
    assert src == {"seed": 5, "train": {"learning_rate": 1e-4}}
