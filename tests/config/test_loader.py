"""Layers, provenance, --add suffixes, the OOM layer and error messages of the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.config.loader import load_config, resolve_layers, set_layer
from lorakit.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_layer_order_and_origins(tmp_path: Path) -> None:
    user = write(tmp_path / "user.toml", "[train]\nlearning_rate = 3e-4\nmax_train_epochs = 4\n")
    lowlr = write(tmp_path / "lowlr.toml", "[train]\nlearning_rate = 1e-5\n")
    r = resolve_layers("sd15-character", [user], [lowlr], oom=True, sets=["train.max_train_epochs=7"])
    cfg = r.config
    assert cfg.train.learning_rate == 1e-5  # --add beats the user file
    assert cfg.train.max_train_epochs == 7  # --set beats everything
    assert cfg.train.train_batch_size == 1  # the OOM layer beats the preset's 2
    assert cfg.network.network_dim == 32  # from the preset
    assert r.origins["train.learning_rate"] == f"--add {lowlr}"
    assert r.origins["train.max_train_epochs"] == "--set"
    assert r.origins["train.train_batch_size"] == "oom preset:oom-fallback"
    assert r.origins["network.network_dim"] == "preset:sd15-character"
    assert r.origins["model.allow_pickle"] == "default"
    assert [x.name for x in r.layers] == [
        "preset:sd15-character", str(user), f"--add {lowlr}", "--add suffix", "oom preset:oom-fallback", "--set"]


def test_add_appends_stems_to_output_name(tmp_path: Path) -> None:
    base = write(tmp_path / "base.toml", '[output]\noutput_name = "x"\n')
    a = write(tmp_path / "lowlr.toml", "[train]\nlearning_rate = 1e-5\n")
    b = write(tmp_path / "big.toml", "[network]\nnetwork_dim = 64\n")
    r = resolve_layers(files=[base], adds=[a, b])
    assert r.config.output.output_name == "x_lowlr_big"
    assert r.origins["output.output_name"] == "--add suffix"
    # an --add that is a preset name works too; --set still wins over the suffix
    assert resolve_layers(files=[base], adds=["lowvram-8gb"]).config.output.output_name == "x_lowvram-8gb"
    assert resolve_layers(files=[base], adds=[a], sets=["output.output_name=y"]).config.output.output_name == "y"


def test_oom_layer_from_batch_oom_file(tmp_path: Path) -> None:
    oom = write(tmp_path / "outofmemory.toml", "[network]\nnetwork_dim = 2\n")
    user = write(tmp_path / "u.toml", f'[batch]\noom_file = "{oom.as_posix()}"\n')
    assert resolve_layers(files=[user]).config.network.network_dim == 16
    r = resolve_layers(files=[user], oom=True)
    assert r.config.network.network_dim == 2
    assert r.origins["network.network_dim"] == f"oom {oom.as_posix()}"


def test_unknown_key_names_file_key_and_suggestion(tmp_path: Path) -> None:
    f = write(tmp_path / "typo.toml", "[train]\nlearning_rat = 1e-4\nnetwork_dim = 8\n[network]\nx = 1\n[trian]\n")
    with pytest.raises(ConfigError) as exc:
        load_config([f])
    problems = exc.value.problems
    assert f"{f}: unknown key 'train.learning_rat'; did you mean 'train.learning_rate'?" in problems
    assert f"{f}: unknown key 'train.network_dim'; did you mean 'network.network_dim'?" in problems
    assert f"{f}: unknown key 'network.x'" in problems  # nothing close: no suggestion
    assert f"{f}: unknown key 'trian'; did you mean 'train'?" in problems
    assert len(problems) == 4


def test_wrong_type_and_range_name_key_value_and_range(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_layers(sets=["network.network_dim=0", "train.learning_rate=fast", "train.noise_offset=1.5",
                             "train.optimizer_type=Lion9"])
    text = "\n".join(exc.value.problems)
    assert len(exc.value.problems) == 4  # every problem at once
    assert "--set: network.network_dim = 0:" in text and "≥ 1 and ≤ 1024" in text
    assert "train.learning_rate = 'fast'" in text and "a number" in text
    assert "train.noise_offset = 1.5" in text and "≥ 0 and ≤ 1" in text
    assert "train.optimizer_type = 'Lion9'" in text and "'AdamW'" in text


def test_reading_problems_of_several_files_come_together(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.toml", "[train\n")
    with pytest.raises(ConfigError) as exc:
        resolve_layers(files=[tmp_path / "missing.toml", bad], adds=["no-such-preset"], sets=["novalue"])
    text = "\n".join(exc.value.problems)
    assert "missing.toml: file not found" in text
    assert "bad.toml: not valid TOML" in text
    assert "unknown preset 'no-such-preset'" in text
    assert "--set 'novalue': expected KEY=VALUE" in text


def test_set_layer_parses_toml_values() -> None:
    layer = set_layer(["a.b=1", "a.c=true", 'a.d=["x", "y"]', "a.e=word", "a.f=1e-4"])
    assert layer.values == {"a": {"b": 1, "c": True, "d": ["x", "y"], "e": "word", "f": 1e-4}}


def test_alias_suggestion_for_other_tools_names() -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_layers(sets=["train.lr=1e-4"])
    assert exc.value.problems == ["--set: unknown key 'train.lr'; did you mean 'train.learning_rate'?"]


def test_te_lr_with_frozen_text_encoder_is_a_warning() -> None:
    r = resolve_layers("sd15-character", sets=["network.train_text_encoder=false"])
    assert r.warnings == ["preset:sd15-character: train.text_encoder_lr: is set but network.train_text_encoder is "
                          "false: the text encoder stays frozen and this value is not used"]
    assert resolve_layers("sd15-character").warnings == []


def test_every_learning_rate_zero_is_an_error() -> None:
    with pytest.raises(ConfigError) as exc:
        resolve_layers(sets=["train.learning_rate=0"])
    assert "every learning rate is 0" in exc.value.problems[0]


def test_argument_errors_come_with_schema_errors(tmp_path: Path) -> None:
    f = write(tmp_path / "run.toml", '[train]\noptimizer_args = ["weight_decy=0.1"]\n[network]\nnetwork_dim = 0\n')
    with pytest.raises(ConfigError) as exc:
        resolve_layers(files=[f])
    assert len(exc.value.problems) == 2
    assert exc.value.problems[0].startswith(f"{f}: network.network_dim = 0")
    assert exc.value.problems[1].startswith(f"{f}: train.optimizer_args: AdamW has no parameter 'weight_decy'")


def test_oom_file_from_set_is_used(tmp_path: Path) -> None:
    oom = write(tmp_path / "myoom.toml", "[network]\nnetwork_dim = 2\n")
    r = resolve_layers(oom=True, sets=[f'batch.oom_file="{oom.as_posix()}"'])
    assert r.config.network.network_dim == 2
    assert r.origins["network.network_dim"] == f"oom {oom.as_posix()}"
    assert [x.name for x in r.layers] == [f"oom {oom.as_posix()}", "--set"]


def test_unreadable_toml_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lorakit.config import loader

    latin = tmp_path / "latin1.toml"
    latin.write_bytes('[output]\noutput_name = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        load_config([latin])
    assert exc.value.problems[0].startswith(f"{latin}: not UTF-8 text")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    ok = write(tmp_path / "ok.toml", "[train]\nseed = 1\n")
    monkeypatch.setattr(loader, "open", denied, raising=False)
    with pytest.raises(ConfigError) as exc:
        load_config([ok])
    assert exc.value.problems == [f"{ok}: cannot read it: Permission denied"]


def test_toml_with_utf8_bom_is_read(tmp_path: Path) -> None:
    """Windows Notepad saves UTF-8 with a byte-order mark; the file reads as if it had none."""
    text = '[output]\noutput_name = "café"\n\n[train]\nlearning_rate = 3e-4\n'
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    cfg = load_config([bom])
    assert cfg.output.output_name == "café" and cfg.train.learning_rate == 3e-4
    r = resolve_layers(files=[bom])
    assert r.origins["train.learning_rate"] == str(bom)
    # a BOM is only skipped at the very start: a bad byte later is still reported at its real offset
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xef\xbb\xbf" + b'[output]\noutput_name = "caf\xe9"\n')
    with pytest.raises(ConfigError) as exc:
        load_config([bad])
    assert exc.value.problems[0] == f"{bad}: not UTF-8 text (byte 30); save it as UTF-8"


def test_mode_errors_name_the_key_and_what_to_do() -> None:
    cases = {
        "mode.type='foo'": "--set: mode.type = 'foo': not a mode (allowed: 'lora', 'dreambooth', 'ileco', "
                           "'difference')",
        "mode='ileco'": "--set: mode = 'ileco': [mode] is a table; set mode.type (e.g. --set mode.type='ileco')",
        "mode.original_prompt='x'": "--set: unknown key 'mode.original_prompt'; it is a setting of mode 'ileco', "
                                    "and this config's mode.type is 'lora'",
    }
    for setting, message in cases.items():
        with pytest.raises(ConfigError) as err:
            resolve_layers(sets=[setting])
        assert err.value.problems == [message]
