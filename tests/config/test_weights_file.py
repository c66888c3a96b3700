"""`network.network_weights = "runs/<id>"` picks the run's kohya LoRA, never a PEFT adapter file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.validate import check, weights_file


def touch(path: Path, mtime: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_final_kohya_file_beats_newer_peft_and_checkpoints(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "r1"
    final = touch(run / "train" / "lora.safetensors", 100)
    touch(run / "train" / "lora-step00000010.safetensors", 200)
    touch(run / "train" / "lora_peft" / "unet" / "adapter_model.safetensors", 300)
    touch(run / "train" / "lora-step00000010_peft" / "unet" / "adapter_model.safetensors", 400)
    assert weights_file(run) == final
    assert weights_file(run / "train") == final
    assert weights_file(final) == final


def test_without_a_final_file_the_highest_step_checkpoint(tmp_path: Path) -> None:
    train = tmp_path / "r2" / "train"
    touch(train / "lora-step00000100.safetensors", 100)  # older file, higher step
    touch(train / "lora-step00000020.safetensors", 500)
    touch(train / "lora-step00000100_peft" / "unet" / "adapter_model.safetensors", 900)
    assert weights_file(tmp_path / "r2") == train / "lora-step00000100.safetensors"


def test_only_peft_or_nothing_is_none(tmp_path: Path) -> None:
    touch(tmp_path / "r3" / "train" / "lora_peft" / "unet" / "adapter_model.safetensors", 100)
    assert weights_file(tmp_path / "r3") is None
    assert weights_file(tmp_path / "r3" / "train" / "lora_peft") is None
    assert weights_file(tmp_path / "missing") is None
    loose = touch(tmp_path / "loras" / "style.safetensors", 100)  # a plain folder of LoRA files
    assert weights_file(tmp_path / "loras") == loose


def test_resume_from_a_run_saved_in_both_formats(tmp_path: Path, image_dir: Path) -> None:
    common = [f'data.train_data_dir="{image_dir.as_posix()}"', f'output.output_dir="{tmp_path.as_posix()}"',
              "data.resolution=64", "network.network_dim=4", "network.network_alpha=1",
              "output.save_format='both'", "output.save_precision='fp32'", "train.learning_rate=1e-2"]
    first = api.train(load_config(sets=common + ["train.max_train_steps=2", "output.save_every_n_steps=1",
                                                 "output.run_id='first'"]))
    assert (first.run_dir / "train" / "lora_peft" / "pytorch_lora_weights.safetensors").is_file()
    assert weights_file(first.run_dir) == first.lora_path
    # a learning rate so small that one step barely moves the weights: the result shows what was loaded
    cfg = load_config(sets=common + ["train.max_train_steps=1", "output.run_id='second'", "train.learning_rate=1e-8",
                                     f'network.network_weights="{first.run_dir.as_posix()}"'])
    errors, _ = check(cfg, paths=True)
    assert errors == []
    second = api.train(cfg)  # loads the kohya file's weights (a PEFT file would not fit) and trains on
    with safe_open(str(first.lora_path), "pt") as a, safe_open(str(second.lora_path), "pt") as b:
        key = next(k for k in a.keys() if k.endswith("lora_up.weight"))
        start, after = a.get_tensor(key), b.get_tensor(key)
    assert start.abs().max() > 1e-3  # the first run trained the up weights away from zero (a fresh start)
    assert torch.allclose(after, start, atol=1e-6)  # the second run began from the first run's kohya weights
