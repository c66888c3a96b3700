"""Real-size check of the shipped configs, run by hand only:

    LORAKIT_REAL_SIZE=1 pytest tests/families/test_single_file_real_size.py

Builds a random fp16 model of the real architecture from the shipped config, writes it as an original single file
(2.1 GB for SD 1.5, 2.6 GB for SD 2.1, 8.3 GB for SDXL), loads it through `load_single_file` with no config folder
and no network, and compares every tensor. Needs about 20 GB of RAM for SDXL; about 1, 1 and 5 minutes on 2 CPUs.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
from diffusers import UNet2DConditionModel
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from lorakit.families import single_file as sf

from .ldm_checkpoint import pipeline_to_ldm, write_single_file

pytestmark = pytest.mark.skipif(os.environ.get("LORAKIT_REAL_SIZE") != "1", reason="set LORAKIT_REAL_SIZE=1")


def random_fp16(make) -> torch.nn.Module:
    """A module built without initialisation, then filled with N(0, 1) in float16 (fast for billions of weights)."""
    with init_empty_weights():
        module = make()
    module = module.to_empty(device="cpu").to(torch.float16)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
        for name, b in module.named_buffers():
            if name.endswith("position_ids"):
                b.copy_(torch.arange(b.shape[-1])[None])
    return module


def text_encoder(root, name: str) -> torch.nn.Module:
    cfg = CLIPTextConfig.from_pretrained(root / name)
    cls = CLIPTextModelWithProjection if cfg.architectures == ["CLIPTextModelWithProjection"] else CLIPTextModel
    return random_fp16(lambda: cls(cfg))


@pytest.mark.parametrize(("arch", "family"), [("sd15", "sd1"), ("sd21-v", "sd2"), ("sdxl-base", "sdxl")])
def test_real_size_checkpoint_loads_exactly_with_shipped_configs(arch, family, tmp_path):
    root = sf.shipped_config(arch)
    parts = dict(
        unet=random_fp16(lambda: UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root / "unet"))),
        vae=random_fp16(lambda: AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae"))),
        text_encoder=text_encoder(root, "text_encoder"),
        scheduler=DDIMScheduler(),
        **sf._tokenizers_for(root),
    )
    if family == "sdxl":
        pipe = StableDiffusionXLPipeline(text_encoder_2=text_encoder(root, "text_encoder_2"), **parts)
    else:
        pipe = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None)
    path = write_single_file(pipe, family, tmp_path / f"{arch}.safetensors")
    del pipe, parts
    loaded = sf.load_single_file(path, family, None, torch.float16)  # shipped config, no network
    assert type(loaded.scheduler).__name__ == {"sd1": "PNDMScheduler", "sd2": "DDIMScheduler"}.get(
        family, "EulerDiscreteScheduler"
    )
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        again = pipeline_to_ldm(loaded, family)
        assert set(again) == names
        differing = [k for k, v in again.items() if not torch.equal(f.get_tensor(k), v)]
    assert not differing, differing[:5]
