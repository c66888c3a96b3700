"""Guards against installs and configs that validate but do not run: every test trains for real, briefly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import run_cli
from lorakit.config.loader import resolve_layers
from lorakit.errors import ConfigError



def test_shipped_text_encoder_preset_trains_the_text_encoder(monkeypatch, capsys, tmp_path: Path,
                                                            image_dir: Path) -> None:
    """sd15-character trains a text-encoder LoRA: a transformers/peft pairing that refuses it fails here."""
    code, out = run_cli(monkeypatch, capsys, "train", "--preset", "sd15-character",
                        "--set", "model.pretrained_model_name_or_path='tiny-sd1'", "--set", "train.mixed_precision='no'",
                        "--set", f"data.train_data_dir='{image_dir}'", "--set", "data.resolution=64",
                        "--set", "network.network_dim=4", "--set", "train.max_train_steps=2",
                        "--set", "train.learning_rate=1e-3", "--set", "train.text_encoder_lr=1e-3",
                        "--set", f"output.output_dir='{tmp_path / 'runs'}'")
    assert code == 0, out
    (lora,) = (tmp_path / "runs").glob("*/train/character.safetensors")
    sd = load_file(lora)
    te_up = [v for k, v in sd.items() if k.startswith("lora_te_") and k.endswith("lora_up.weight")]
    unet_up = [v for k, v in sd.items() if k.startswith("lora_unet_") and k.endswith("lora_up.weight")]
    # lora_up starts at zero (kohya and peft init): non-zero means both parts were really trained
    assert te_up and all(v.abs().sum() > 0 for v in te_up)
    assert unet_up and all(v.abs().sum() > 0 for v in unet_up)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj") for k in sd)


def _longest_valid_name(tmp_path: Path, image_dir: Path) -> int:
    """The longest output_name `config validate` accepts in tmp_path (binary search on the validator)."""
    def ok(n: int) -> bool:
        try:
            resolve_layers(sets=[f"data.train_data_dir='{image_dir}'", f"output.output_dir='{tmp_path / 'runs'}'",
                                 f"output.output_name='{'n' * n}'"], check_paths=True)
            return True
        except ConfigError:
            return False

    lo, hi = 1, os.pathconf(tmp_path, "PC_NAME_MAX")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def test_longest_name_validate_accepts_saves_every_file(monkeypatch, capsys, tmp_path: Path,
                                                        image_dir: Path) -> None:
    """'validate: ok' means the run finishes: the longest accepted output_name survives checkpoints and the
    final save, and one byte more is refused before training."""
    n = _longest_valid_name(tmp_path, image_dir)
    assert 150 < n < os.pathconf(tmp_path, "PC_NAME_MAX")
    common = ["--set", f"data.train_data_dir='{image_dir}'", "--set", "data.resolution=64",
              "--set", "network.network_dim=2", "--set", "train.max_train_steps=2",
              "--set", "output.save_every_n_steps=1", "--set", f"output.output_dir='{tmp_path / 'runs'}'"]
    code, out = run_cli(monkeypatch, capsys, "train", *common, "--set", f"output.output_name='{'n' * n}'")
    assert code == 0, out
    (train_dir,) = (tmp_path / "runs").glob("*/train")
    assert {p.name for p in train_dir.glob("*.safetensors")} == {
        f"{'n' * n}.safetensors", f"{'n' * n}-step00000001.safetensors"}
    code, out = run_cli(monkeypatch, capsys, "train", *common, "--set", f"output.output_name='{'n' * (n + 1)}'")
    assert code == 2 and "output.output_name" in out and "shorten it by 1 bytes" in out
    assert len(list((tmp_path / "runs").iterdir())) == 1  # the refused run left nothing behind

