"""Which family a LoRA file is for, from the metadata other trainers write (spellings differ by trainer)."""

from __future__ import annotations

import pytest

from lorakit.families.registry import lora_family


@pytest.mark.parametrize("value,family", [
    ("sd_v1", "sd1"), ("sd_v2", "sd2"), ("sd_v2_768_v", "sd2"), ("sdxl_base_v1-0", "sdxl"),  # sd-scripts
    ("stable-diffusion-v1/lora", "sd1"), ("stable-diffusion-v2-768-v/lora", "sd2"),  # modelspec
    ("stable-diffusion-xl-v1-base/lora", "sdxl"),
    ("sd_1.5", "sd1"), ("sd_2.1", "sd2"), ("SD1", "sd1"),  # ai-toolkit and hand-written
    ("stable-diffusion-v3-medium/lora", "sd3"), ("flux-1-dev/lora", "flux"),  # families lorakit lacks: refused
])
def test_metadata_names_the_family(value: str, family: str) -> None:
    assert lora_family({}, {"ss_base_model_version": value})[0] == family
    assert lora_family({}, {"modelspec.architecture": value})[0] == family


def test_unrecognised_metadata_falls_back_to_the_keys() -> None:
    sdxl_keys = {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": [4, 768]}
    assert lora_family(sdxl_keys, {"ss_base_model_version": "v1-5-ish"})[0] == "sdxl"
    assert lora_family({}, {"ss_base_model_version": "custom"}) == (None, "")
