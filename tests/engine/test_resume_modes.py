"""Exact resume in the modes that do not train on an image folder: iLECO (one stage of prompt pairs) and
Difference (two passes; the checkpoint holds the frozen copy machine too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.helpers import assert_same_lora, stop_at
from lorakit import api
from lorakit.config.loader import load_config


def stopped_and_resumed(cfg, step: int):
    stopped = stop_at(cfg, step)
    return api.train(cfg, resume=api.find_checkpoint(stopped.run_dir))


def test_ileco_resumes_bit_identical(tmp_path: Path) -> None:
    cfg = load_config(sets=["mode.type='ileco'", "mode.original_prompt='cat'", "mode.target_prompt='dog'",
                            "data.resolution=64", f"output.output_dir='{tmp_path}'", "train.max_train_steps=5",
                            "network.network_dim=2", "train.train_batch_size=2", "checkpoint.every_n_steps=0"])
    reference = api.train(cfg)
    resumed = stopped_and_resumed(cfg, 3)
    assert resumed.steps == 5
    assert_same_lora(reference.lora_path, resumed.lora_path)


@pytest.mark.parametrize("stop", [2, 4], ids=["in_pass_1", "in_pass_2"])
def test_difference_resumes_bit_identical(tmp_path: Path, stop: int) -> None:
    from modes.test_difference import write_pair

    original, target = write_pair(tmp_path / "pair")
    cfg = load_config(sets=["mode.type='difference'", f"mode.original_image='{original}'",
                            f"mode.target_image='{target}'", "mode.save_first_pass=true", "data.resolution=64",
                            f"output.output_dir='{tmp_path / 'runs'}'", "train.max_train_steps=3",
                            "mode.second_pass.max_train_steps=2", "network.network_dim=2",
                            "train.train_batch_size=2", "train.learning_rate=1e-2", "checkpoint.every_n_steps=0"])
    reference = api.train(cfg)
    resumed = stopped_and_resumed(cfg, stop)
    assert resumed.steps == 5
    assert_same_lora(reference.lora_path, resumed.lora_path)  # the slider, trained over the copy machine
    assert_same_lora(reference.stage_files[0], resumed.stage_files[0])  # the copy machine
