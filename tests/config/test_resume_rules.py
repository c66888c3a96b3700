"""Which config changes a resume accepts: safe ones are listed and allowed, breaking ones refuse it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lorakit.config.loader import Layer, resolve
from lorakit.config.resume_rules import Change, config_changes, refuse_breaking
from lorakit.config.schema import LorakitConfig
from lorakit.errors import ConfigError

BASE: dict[str, Any] = {"data": {"train_data_dir": "train"}, "output": {"run_id": "r1"}}


def cfg(**sections: dict[str, Any]) -> LorakitConfig:
    """The base config with `sections` merged over it (section name → its values)."""
    return resolve([Layer("base", BASE), Layer("change", dict(sections))])


def one_change(key: str, value: Any) -> list[Change]:
    section, name = key.split(".", 1)
    return config_changes(cfg(), cfg(**{section: {name: value}}))


SAFE = [
    ("train.max_train_epochs", 3), ("train.max_train_steps", 100), ("train.log_every_n_steps", 10),
    ("train.validate_every_n_steps", 5), ("train.log_with", "tensorboard"), ("train.max_nonfinite_steps", 0),
    ("train.oom_split_retry", False), ("train.gradient_checkpointing", True), ("train.sdpa", False),
    ("output.save_every_n_steps", 50), ("output.save_format", "both"), ("output.save_precision", "fp32"),
    ("output.output_dir", "elsewhere"), ("output.run_id", "r2"), ("output.save_every_n_epochs", 2),
    ("output.save_last_n_epochs", 3), ("output.save_last_n_steps", 100),
    ("checkpoint.every_n_steps", 10), ("checkpoint.every_n_epochs", 1), ("checkpoint.keep_last", 5),
    ("checkpoint.at_end", False), ("sample.prompts", ["a cat"]), ("sample.every_n_steps", 10),
    ("sample.seed", 9), ("faults.nan_at_step", 3), ("faults.kill_at_step", 2), ("bench.steps", 10),
    ("batch.oom_retries", 5), ("storage.remote_path", "elsewhere"),
]
BREAKING = [
    ("network.network_dim", 32), ("model.pretrained_model_name_or_path", "/models/other.safetensors"),
    ("train.seed", 1), ("train.learning_rate", 2e-4), ("data.train_data_dir", "other"),
    ("train.train_batch_size", 2), ("train.optimizer_type", "Adafactor"), ("train.lr_scheduler", "cosine"),
    ("network.network_module", "loha"), ("train.mixed_precision", "bf16"), ("data.resolution", 256),
]


@pytest.mark.parametrize(("key", "value"), SAFE)
def test_each_safe_key_is_safe(key: str, value: Any) -> None:
    old = cfg().model_dump(mode="json")
    section, name = key.split(".")
    assert one_change(key, value) == [Change(key, old[section][name], value, True)]
    refuse_breaking(one_change(key, value), Path("runs/r1"))  # nothing raised


@pytest.mark.parametrize(("key", "value"), BREAKING)
def test_training_settings_are_breaking(key: str, value: Any) -> None:
    old = cfg().model_dump(mode="json")
    section, name = key.split(".")
    assert one_change(key, value) == [Change(key, old[section][name], value, False)]


def test_no_change_no_changes() -> None:
    assert config_changes(cfg(), cfg()) == []


def test_another_mode_type_is_one_change_of_the_whole_section() -> None:
    ileco = {"type": "ileco", "original_prompt": "Mona Lisa"}
    changes = config_changes(cfg(), cfg(mode=ileco))
    assert [(c.key, c.old["type"], c.new["type"], c.safe) for c in changes] == [("mode", "lora", "ileco", False)]
    assert changes[0].new["original_prompt"] == "Mona Lisa" and changes[0].old == {"type": "lora",
                                                                                     "prior_loss_weight": 1.0}


def test_mode_lists_compare_whole_and_nested_tables_key_by_key() -> None:
    pair = {"original_prompt": "cat", "target_prompt": "dog"}
    old = cfg(mode={"type": "ileco", "original_prompt": "a", "prompts": [pair]})
    new = cfg(mode={"type": "ileco", "original_prompt": "a", "guidance_scale": 1.0,
                    "prompts": [pair, {"original_prompt": "red"}]})
    changes = config_changes(old, new)
    assert [(c.key, c.safe) for c in changes] == [("mode.guidance_scale", False), ("mode.prompts", False)]
    assert changes[1].old == [{**pair, "guidance_scale": None}]
    assert changes[1].new == [{**pair, "guidance_scale": None},
                              {"original_prompt": "red", "target_prompt": "", "guidance_scale": None}]
    diff = {"type": "difference", "original_image": "a.png", "target_image": "b.png"}
    changes = config_changes(cfg(mode=diff), cfg(mode={**diff, "second_pass": {"network_dim": 4}}))
    assert changes == [Change("mode.second_pass.network_dim", None, 4, False)]


def test_describe_is_compact() -> None:
    assert Change("network.network_dim", 16, 32, False).describe() == "network.network_dim: 16 → 32"
    assert Change("train.max_train_steps", None, 100, True).describe() == "train.max_train_steps: unset → 100"
    assert Change("train.sdpa", True, False, True).describe() == "train.sdpa: true → false"
    prompts = [f"p{i}" for i in range(10)]
    assert Change("sample.prompts", [], prompts, True).describe() == "sample.prompts: [] → ['p0', 'p1', 'p2', … +7]"
    long = Change("model.pretrained_model_name_or_path", "a" * 100, "b", False).describe()
    assert long == "model.pretrained_model_name_or_path: '" + "a" * 58 + "… → 'b'"


def test_refusal_lists_every_breaking_change_and_only_those() -> None:
    new = cfg(network={"network_dim": 32}, train={"seed": 1, "max_train_epochs": 4},
              data={"train_data_dir": "other"}, mode={"type": "ileco", "original_prompt": "x"})
    changes = config_changes(cfg(), new)
    assert {c.key: c.safe for c in changes} == {"network.network_dim": False, "data.train_data_dir": False,
                                               "train.seed": False, "train.max_train_epochs": True, "mode": False}
    with pytest.raises(ConfigError) as err:
        refuse_breaking(changes, Path("runs/r1/checkpoints/step-00000100"))
    assert err.value.problems == [
        "network.network_dim: 16 → 32", "data.train_data_dir: 'train' → 'other'", "train.seed: 42 → 1",
        "mode: {type = 'lora', prior_loss_weight = 1.0} → "
        "{type = 'ileco', original_prompt = 'x', target_prompt = '',…",
    ]
    text = str(err.value)
    assert "max_train_epochs" not in text
    assert "runs/r1/checkpoints/step-00000100" in text and "exact training" in text
    assert "new run" in text and "network.network_weights" in text
