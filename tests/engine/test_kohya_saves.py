"""sd-scripts' saving options (epoch files, kept counts) and lora_precision (full_bf16), on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from conftest import write_images
from lorakit import api
from lorakit.config.loader import load_config
from lorakit.errors import ConfigError


def config(tmp_path: Path, image_dir: Path, *extra: str):
    return load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path / "runs"}"', "data.resolution=64",
        "network.network_dim=2", "checkpoint.every_n_steps=0", "checkpoint.at_end=false", *extra,
    ])


def saved(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "train").glob("*.safetensors"))


def test_epoch_saves_and_kept_counts(tmp_path: Path) -> None:
    # 3 images, batch 1: 3 steps per epoch; 4 epochs = 12 steps
    images = write_images(tmp_path / "img", count=3)
    result = api.train(config(tmp_path, images, "train.max_train_steps=12", "output.save_every_n_epochs=1",
                              "output.save_last_n_epochs=2"))
    # sd-scripts (train_network.py): an epoch file "<name>-<epoch:06d>" after every epoch but the last; at epoch e
    # get_remove_epoch_no deletes e - save_every_n_epochs × save_last_n_epochs: 000001 goes at epoch 3
    assert saved(result.run_dir) == ["lora-000002.safetensors", "lora-000003.safetensors", "lora.safetensors"]


def test_step_saves_keep_the_last_n_steps(tmp_path: Path) -> None:
    images = write_images(tmp_path / "img", count=3)
    result = api.train(config(tmp_path, images, "train.max_train_steps=9", "output.save_every_n_steps=2",
                              "output.save_last_n_steps=3"))
    # saves at steps 2, 4, 6, 8; at step s get_remove_step_no removes r = s - 3 - 1 rounded down to a multiple of 2:
    # s=6 → 2, s=8 → 4 (s=4 → 0: no save at step 0)
    assert saved(result.run_dir) == ["lora-step00000006.safetensors", "lora-step00000008.safetensors",
                                     "lora.safetensors"]


def test_lora_precision_bf16_trains_the_network_in_bf16(tmp_path: Path) -> None:
    images = write_images(tmp_path / "img", count=2)
    cfg = config(tmp_path, images, "train.max_train_steps=2", "train.mixed_precision='bf16'", "train.lora_precision='bf16'",
                 "output.save_precision='fp32'", "train.learning_rate=1e-2")
    result = api.train(cfg)
    with safe_open(str(result.lora_path), "pt") as f:
        ups = [f.get_tensor(k) for k in f.keys() if k.endswith("lora_up.weight")]
    # trained in bf16, saved as fp32: every value is exactly a bf16 number, and training changed the zero init
    assert all(torch.equal(t, t.to(torch.bfloat16).float()) for t in ups)
    assert any(t.abs().sum() > 0 for t in ups)


def test_full_precision_needs_the_matching_mixed_precision() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(sets=["train.lora_precision='bf16'", "train.mixed_precision='no'"])
    assert exc.value.problems == ["--set: train.lora_precision: 'bf16' needs train.mixed_precision = 'bf16' (the "
                                  "network computes in it; now 'no')"]
