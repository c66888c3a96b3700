"""CUDA code paths (bf16/fp16 autocast, fused AdamW, gradient checkpointing). Skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorakit import api
from lorakit.config.loader import load_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_trains_on_cuda(tmp_path: Path, image_dir: Path, precision: str) -> None:
    cfg = load_config(sets=[
        f'data.train_data_dir="{image_dir}"', f'output.output_dir="{tmp_path}"', "data.resolution=64",
        "train.max_train_steps=4", f"train.mixed_precision='{precision}'", "train.gradient_checkpointing=true",
        "model.pretrained_model_name_or_path='tiny-sdxl'",
    ])
    result = api.train(cfg)
    sd = load_file(result.lora_path)
    assert sd and all(torch.isfinite(v.float()).all() for v in sd.values())
    assert any(v.abs().sum() > 0 for k, v in sd.items() if k.endswith("lora_up.weight"))
