"""`generate` loads a LoRA file or a PEFT folder with the trained strength, and rejects bad requests clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lorakit import api
from lorakit.config.loader import load_config
from lorakit.config.schema import ModelSection
from lorakit.errors import ConfigError, LorakitError
from lorakit.families import load_model
from lorakit.generate import apply_lora


@torch.no_grad()
def unet_out(parts) -> torch.Tensor:
    cond = parts.family.encode_prompts(parts, ["a cat"])
    gen = torch.Generator().manual_seed(0)
    return parts.unet(torch.randn((1, 4, 8, 8), generator=gen), torch.tensor([300]), **cond).sample


def test_peft_folder_and_kohya_file_give_the_same_model(tmp_path: Path, image_dir: Path) -> None:
    cfg = load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path}"', "data.resolution=64",
        "train.max_train_steps=3", "train.learning_rate=1e-2", "network.network_dim=4", "network.network_alpha=1",
        "output.save_format='both'", "output.save_precision='fp32'",
    ])
    result = api.train(cfg)
    outputs = []
    for lora in (result.lora_path, result.peft_dir):
        parts = load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1"))
        apply_lora(parts, lora, 0.7)
        outputs.append(unet_out(parts))
    base = unet_out(load_model(ModelSection(pretrained_model_name_or_path="tiny-sd1")))
    assert (outputs[0] - base).abs().max() > 1e-4
    assert (outputs[0] - outputs[1]).abs().max() <= 1e-5


def test_bad_requests(tmp_path: Path) -> None:
    req = api.GenerateRequest(model="tiny-sd1", prompt="x", out_dir=tmp_path, steps=0, width=60)
    with pytest.raises(ConfigError) as exc:
        api.generate(req)
    assert any("--steps 0" in p for p in exc.value.problems) and any("--width 60" in p for p in exc.value.problems)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    for lora in (tmp_path / "empty", tmp_path / "bad.safetensors"):
        with pytest.raises(LorakitError, match=lora.name):
            api.generate(api.GenerateRequest(model="tiny-sd1", prompt="x", out_dir=tmp_path, lora=lora, steps=1))
