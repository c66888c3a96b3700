"""kohya/LyCORIS module names and LoRA-block-weight block names of every targetable UNet layer, per family.

The expected names are written by hand from the reference code, not produced by lorakit:
- sd-scripts `library/sdxl_model_util.py` `make_unet_conversion_map` (diffusers ⇄ original SDXL UNet),
- sd-scripts `networks/lora.py` `get_block_index` (block indices: SD1 by diffusers name, SDXL by input_blocks index),
- ComfyUI `comfy/utils.py` `unet_to_diffusers` (upsampler after the attention: `output_blocks.N.2.conv`).
The real architectures are built from the shipped configs on the `meta` device (no memory, under a second).
"""

from __future__ import annotations

import re
from functools import lru_cache

import pytest
import torch
from diffusers import UNet2DConditionModel

from lorakit.families import FAMILIES
from lorakit.families.single_file import shipped_config


@lru_cache(maxsize=None)
def real_unet(arch: str) -> UNet2DConditionModel:
    with torch.device("meta"):
        return UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(shipped_config(arch) / "unet"))


@lru_cache(maxsize=None)
def tiny_unet(family: str) -> UNet2DConditionModel:
    return FAMILIES[family].build_tiny().unet


SDXL_NAMES = {  # diffusers path → (kohya name without "lora_unet_", block)
    "conv_in": ("input_blocks_0_0", "IN00"),
    "down_blocks.0.resnets.0.conv1": ("input_blocks_1_0_in_layers_2", "IN01"),
    "down_blocks.0.resnets.1.time_emb_proj": ("input_blocks_2_0_emb_layers_1", "IN02"),
    "down_blocks.0.downsamplers.0.conv": ("input_blocks_3_0_op", "IN03"),
    "down_blocks.1.resnets.0.conv_shortcut": ("input_blocks_4_0_skip_connection", "IN04"),
    "down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k": (
        "input_blocks_4_1_transformer_blocks_1_attn2_to_k", "IN04"),
    "down_blocks.1.attentions.1.proj_in": ("input_blocks_5_1_proj_in", "IN05"),
    "down_blocks.1.downsamplers.0.conv": ("input_blocks_6_0_op", "IN06"),
    "down_blocks.2.attentions.0.transformer_blocks.9.attn1.to_out.0": (
        "input_blocks_7_1_transformer_blocks_9_attn1_to_out_0", "IN07"),
    "down_blocks.2.resnets.1.conv2": ("input_blocks_8_0_out_layers_3", "IN08"),
    "mid_block.resnets.0.conv1": ("middle_block_0_in_layers_2", "MID"),
    "mid_block.attentions.0.transformer_blocks.9.ff.net.0.proj": (
        "middle_block_1_transformer_blocks_9_ff_net_0_proj", "MID"),
    "mid_block.attentions.0.proj_out": ("middle_block_1_proj_out", "MID"),
    "mid_block.resnets.1.time_emb_proj": ("middle_block_2_emb_layers_1", "MID"),
    "up_blocks.0.resnets.0.conv_shortcut": ("output_blocks_0_0_skip_connection", "OUT00"),
    "up_blocks.0.attentions.2.transformer_blocks.0.attn1.to_out.0": (
        "output_blocks_2_1_transformer_blocks_0_attn1_to_out_0", "OUT02"),
    "up_blocks.0.upsamplers.0.conv": ("output_blocks_2_2_conv", "OUT02"),
    "up_blocks.1.attentions.1.transformer_blocks.0.ff.net.2": ("output_blocks_4_1_transformer_blocks_0_ff_net_2",
                                                               "OUT04"),
    "up_blocks.1.upsamplers.0.conv": ("output_blocks_5_2_conv", "OUT05"),
    "up_blocks.2.resnets.0.conv1": ("output_blocks_6_0_in_layers_2", "OUT06"),
    "up_blocks.2.resnets.2.conv2": ("output_blocks_8_0_out_layers_3", "OUT08"),
    "time_embedding.linear_1": ("time_embed_0", None),
    "time_embedding.linear_2": ("time_embed_2", None),
    "add_embedding.linear_1": ("label_emb_0_0", None),
    "add_embedding.linear_2": ("label_emb_0_2", None),
    "conv_out": ("out_2", None),
}

SD15_BLOCKS = {  # diffusers path → block (sd-scripts get_block_index: down 1+3i+j, sampler 3i+3; up 3i+j, 3i+2)
    "conv_in": "IN00",
    "down_blocks.0.resnets.0.conv1": "IN01",
    "down_blocks.0.attentions.1.transformer_blocks.0.attn1.to_q": "IN02",
    "down_blocks.0.downsamplers.0.conv": "IN03",
    "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k": "IN04",
    "down_blocks.2.downsamplers.0.conv": "IN09",
    "down_blocks.3.resnets.0.time_emb_proj": "IN10",
    "down_blocks.3.resnets.1.conv2": "IN11",
    "mid_block.resnets.0.conv1": "MID",
    "mid_block.attentions.0.proj_in": "MID",
    "mid_block.resnets.1.conv2": "MID",
    "up_blocks.0.resnets.0.conv1": "OUT00",
    "up_blocks.0.upsamplers.0.conv": "OUT02",
    "up_blocks.1.attentions.2.transformer_blocks.0.ff.net.0.proj": "OUT05",
    "up_blocks.2.attentions.1.proj_in": "OUT07",
    "up_blocks.2.upsamplers.0.conv": "OUT08",
    "up_blocks.3.resnets.2.conv1": "OUT11",
    "up_blocks.3.attentions.2.proj_out": "OUT11",
    "time_embedding.linear_1": None,
    "conv_out": None,
}


@pytest.mark.parametrize("path", sorted(SDXL_NAMES))
def test_sdxl_kohya_name_and_block(path: str) -> None:
    fam, unet = FAMILIES["sdxl"], real_unet("sdxl-base")
    name, block = SDXL_NAMES[path]
    assert fam.kohya_unet_name(path, unet) == "lora_unet_" + name
    assert fam.kohya_unet_names(unet)[path] == "lora_unet_" + name
    assert fam.unet_block(path, unet) == block


@pytest.mark.parametrize("family,arch", [("sd1", "sd15"), ("sd2", "sd21-v")])
@pytest.mark.parametrize("path", sorted(SD15_BLOCKS))
def test_sd1_sd2_kohya_name_is_the_diffusers_path_and_block(family: str, arch: str, path: str) -> None:
    fam, unet = FAMILIES[family], real_unet(arch)
    assert fam.kohya_unet_names(unet)[path] == "lora_unet_" + path.replace(".", "_")
    assert fam.unet_block(path, unet) == SD15_BLOCKS[path]


# sd-scripts `get_block_index`, restated: SD1/SD2 from the diffusers-style name, SDXL from the original one
_UPDOWN = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")


def sd_scripts_block(name: str, sdxl: bool) -> str | None:
    if sdxl:
        m = re.match(r"lora_unet_(input_blocks|middle_block|output_blocks)_(\d+)_", name)
        if not m:
            return None
        kind, index = m.group(1), int(m.group(2))
        return {"input_blocks": f"IN{index:02d}", "output_blocks": f"OUT{index:02d}"}.get(kind, "MID")
    if m := _UPDOWN.search(name):
        i, j = int(m.group(2)), int(m.group(4))
        idx = 3 * i + (2 if m.group(3).endswith("samplers") else j)
        return f"IN{idx + 1:02d}" if m.group(1) == "down" else f"OUT{idx:02d}"
    return "MID" if "mid_block_" in name else None


@pytest.mark.parametrize("family,arch", [("sd1", "sd15"), ("sd2", "sd21-v"), ("sdxl", "sdxl-base")])
def test_every_layer_has_a_unique_name_and_sd_scripts_block(family: str, arch: str) -> None:
    fam, unet = FAMILIES[family], real_unet(arch)
    names = fam.kohya_unet_names(unet)
    layers = {p for p, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    assert set(names) == layers
    assert len(set(names.values())) == len(names)
    assert fam.kohya_unet_paths(unet) == {n: p for p, n in names.items()}
    for path, name in names.items():
        expected = sd_scripts_block(name, family == "sdxl")
        if path == "conv_in":
            expected = "IN00"  # sd-scripts builds no LoRA there; TrainTrain's IN00 is input_blocks.0 = conv_in
        assert fam.unet_block(path, unet) == expected, path


@pytest.mark.parametrize("family,arch,count", [("sd1", "sd15", 282), ("sd2", "sd21-v", 282),
                                               ("sdxl", "sdxl-base", 794)])
def test_diffusers_own_converter_maps_every_name_back_to_its_module(family: str, arch: str, count: int) -> None:
    """diffusers' kohya → diffusers conversion (the one `load_lora_weights` runs) is an independent inverse."""
    from diffusers.loaders.lora_conversion_utils import (_convert_non_diffusers_lora_to_diffusers,
                                                         _maybe_map_sgm_blocks_to_diffusers)
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft

    fam, unet = FAMILIES[family], real_unet(arch)
    names = fam.kohya_unet_names(unet)
    one = torch.zeros(1)
    sd = {f"{n}.{t}": one for n in names.values() for t in ("lora_down.weight", "lora_up.weight", "alpha")}
    sd = _maybe_map_sgm_blocks_to_diffusers(sd, unet.config)
    sd, _ = _convert_non_diffusers_lora_to_diffusers(sd)
    peft_sd = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in sd.items()})
    assert {k.rpartition(".lora_A")[0] for k in peft_sd if ".lora_A" in k} == set(names)
    assert len(names) == count


def test_block_names_of_the_full_size_models() -> None:
    sd = ("BASE", *(f"IN{i:02d}" for i in range(12)), "MID", *(f"OUT{i:02d}" for i in range(12)))
    xl = ("BASE", *(f"IN{i:02d}" for i in range(9)), "MID", *(f"OUT{i:02d}" for i in range(9)))
    assert FAMILIES["sd1"].block_names() == FAMILIES["sd2"].block_names() == sd
    assert FAMILIES["sdxl"].block_names() == xl
    assert FAMILIES["sd1"].block_names(real_unet("sd15")) == sd
    assert FAMILIES["sd2"].block_names(real_unet("sd21-v")) == sd
    assert FAMILIES["sdxl"].block_names(real_unet("sdxl-base")) == xl


@pytest.mark.parametrize("family,arch", [("sd1", "sd15"), ("sd2", "sd21-v"), ("sd2", "sd21-base"),
                                         ("sdxl", "sdxl-base")])
def test_full_size_shape_is_the_shipped_architecture(family: str, arch: str) -> None:
    from lorakit.families.unet_layout import unet_shape

    assert FAMILIES[family].full_unet_shape == unet_shape(real_unet(arch))


# The tiny models: 2 levels of 2 resnets (attention in both), so input_blocks 0–5 and output_blocks 0–5
TINY_BLOCKS = ("BASE", "IN00", "IN01", "IN02", "IN03", "IN04", "IN05", "MID",
               "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_tiny_models_block_list_is_what_their_layers_use(family: str) -> None:
    fam, unet = FAMILIES[family], tiny_unet(family)
    assert fam.block_names(unet) == TINY_BLOCKS
    used = {fam.unet_block(p, unet) for p in fam.kohya_unet_names(unet)}
    assert used == set(TINY_BLOCKS[1:]) | {None}  # every UNet block has layers; BASE is the text encoders'
    assert fam.BASE == "BASE"


def test_tiny_sdxl_names() -> None:
    fam, unet = FAMILIES["sdxl"], tiny_unet("sdxl")
    names = fam.kohya_unet_names(unet)
    assert names["down_blocks.0.downsamplers.0.conv"] == "lora_unet_input_blocks_3_0_op"
    assert names["down_blocks.1.attentions.1.transformer_blocks.1.attn2.to_v"] == \
        "lora_unet_input_blocks_5_1_transformer_blocks_1_attn2_to_v"
    assert names["up_blocks.0.upsamplers.0.conv"] == "lora_unet_output_blocks_2_2_conv"
    assert names["up_blocks.1.resnets.2.conv_shortcut"] == "lora_unet_output_blocks_5_0_skip_connection"
    assert len(set(names.values())) == len(names)


def test_names_of_a_peft_wrapped_unet_are_those_of_the_plain_one() -> None:
    from peft import LoraConfig, inject_adapter_in_model

    fam = FAMILIES["sdxl"]
    plain = dict(fam.kohya_unet_names(tiny_unet("sdxl")))
    unet = fam.build_tiny().unet
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["to_q", "conv1", "proj_in"]), unet)
    from lorakit.families.base import _NAME_CACHE

    _NAME_CACHE.clear()  # walk the wrapped model itself
    assert fam.kohya_unet_names(unet) == plain
    path = "down_blocks.1.resnets.0.conv1"
    assert fam.kohya_unet_name(path, unet) == "lora_unet_input_blocks_4_0_in_layers_2"


def test_a_path_that_is_no_unet_layer_has_no_sdxl_name() -> None:
    from lorakit.errors import ModelError

    with pytest.raises(ModelError, match="nope.layer has no kohya name"):
        FAMILIES["sdxl"].kohya_unet_name("nope.layer", tiny_unet("sdxl"))
    assert FAMILIES["sdxl"].unet_block("nope.layer", tiny_unet("sdxl")) is None


@pytest.mark.parametrize("path,element", [
    ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", "cross_attention"),
    ("mid_block.attentions.0.transformer_blocks.3.attn1.to_out.0", "self_attention"),
    ("up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", None),
    ("up_blocks.1.attentions.0.proj_in", None),
    ("down_blocks.0.resnets.0.conv1", None),
])
def test_unet_element(path: str, element: str | None) -> None:
    assert FAMILIES["sd1"].unet_element(path) == element


@pytest.mark.parametrize("given,canonical", [("M00", "MID"), ("mid", "MID"), ("M", "MID"), ("in4", "IN04"),
                                             ("IN04", "IN04"), ("OUT1", "OUT01"), ("out11", "OUT11"),
                                             ("base", "BASE"), ("M01", "M01"), ("foo", "FOO")])
def test_canonical_block_names(given: str, canonical: str) -> None:
    assert FAMILIES["sdxl"].canonical_block(given) == canonical
