"""Tests only: write a diffusers pipeline as an original single-file checkpoint (LDM for SD1/SD2, SGM for SDXL).

This is the inverse of the key conversion diffusers' `from_single_file` does, so a tiny random pipeline can stand in
for a real A1111/civitai checkpoint. It is written from the published layouts (CompVis/Stability `ldm`/`sgm`
module names), not from diffusers' code, and it fails loudly on any tensor it cannot place.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

RESNET_NAMES = {  # diffusers ResnetBlock2D → LDM ResBlock
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename_head(rest: str, table: dict[str, str]) -> str:
    """Replace the leading module name of `rest` (e.g. 'norm1.weight') using `table`."""
    for old, new in table.items():
        if rest.startswith(old + "."):
            return new + rest[len(old) :]
    raise KeyError(rest)


def unet_to_ldm(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel state dict → `model.diffusion_model.*` (input/middle/output blocks) names."""
    cfg = unet.config
    per_block = cfg.layers_per_block
    n_down = len(cfg.down_block_types)
    fixed = {
        "conv_in": "input_blocks.0.0",
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    prefixes: dict[str, tuple[str, dict[str, str] | None]] = {}
    for module, target in fixed.items():
        prefixes[module] = (target, None)
    for b in range(n_down):
        for j in range(per_block):
            i = 1 + b * (per_block + 1) + j
            prefixes[f"down_blocks.{b}.resnets.{j}"] = (f"input_blocks.{i}.0", RESNET_NAMES)
            prefixes[f"down_blocks.{b}.attentions.{j}"] = (f"input_blocks.{i}.1", None)
        after_last = 1 + b * (per_block + 1) + per_block
        prefixes[f"down_blocks.{b}.downsamplers.0.conv"] = (f"input_blocks.{after_last}.0.op", None)
    prefixes["mid_block.resnets.0"] = ("middle_block.0", RESNET_NAMES)
    prefixes["mid_block.attentions.0"] = ("middle_block.1", None)
    prefixes["mid_block.resnets.1"] = ("middle_block.2", RESNET_NAMES)
    for b, block_type in enumerate(cfg.up_block_types):
        for j in range(per_block + 1):
            i = b * (per_block + 1) + j
            prefixes[f"up_blocks.{b}.resnets.{j}"] = (f"output_blocks.{i}.0", RESNET_NAMES)
            prefixes[f"up_blocks.{b}.attentions.{j}"] = (f"output_blocks.{i}.1", None)
        last = b * (per_block + 1) + per_block
        slot = 2 if "CrossAttn" in block_type else 1
        prefixes[f"up_blocks.{b}.upsamplers.0.conv"] = (f"output_blocks.{last}.{slot}.conv", None)
    return {"model.diffusion_model." + _map_key(k, prefixes): v for k, v in unet.state_dict().items()}


def _map_key(key: str, prefixes: dict[str, tuple[str, dict[str, str] | None]]) -> str:
    """Rename `key` by the longest matching module prefix (and the inner table, if any)."""
    for module in sorted(prefixes, key=len, reverse=True):
        if key.startswith(module + "."):
            target, inner = prefixes[module]
            rest = key[len(module) + 1 :]
            return f"{target}.{_rename_head(rest, inner) if inner else rest}"
    raise KeyError(f"no LDM name for {key}")


def vae_to_ldm(vae: torch.nn.Module, prefix: str = "first_stage_model.") -> dict[str, torch.Tensor]:
    """AutoencoderKL state dict → LDM `encoder.down.N.block.M` / `decoder.up.N` names; attention as 1×1 convs."""
    n_up = len(vae.config.up_block_types)
    prefixes: dict[str, tuple[str, dict[str, str] | None]] = {
        "quant_conv": ("quant_conv", None),
        "post_quant_conv": ("post_quant_conv", None),
    }
    resnet = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
    for part in ("encoder", "decoder"):
        for module in ("conv_in", "conv_out"):
            prefixes[f"{part}.{module}"] = (f"{part}.{module}", None)
        prefixes[f"{part}.conv_norm_out"] = (f"{part}.norm_out", None)
        for k in range(2):
            prefixes[f"{part}.mid_block.resnets.{k}"] = (f"{part}.mid.block_{k + 1}", resnet)
        prefixes[f"{part}.mid_block.attentions.0"] = (f"{part}.mid.attn_1", VAE_ATTENTION_NAMES)
    for i in range(len(vae.config.down_block_types)):
        for j in range(vae.config.layers_per_block):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}"] = (f"encoder.down.{i}.block.{j}", resnet)
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = (f"encoder.down.{i}.downsample.conv", None)
    for i in range(n_up):
        for j in range(vae.config.layers_per_block + 1):
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}"] = (f"decoder.up.{n_up - 1 - i}.block.{j}", resnet)
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = (f"decoder.up.{n_up - 1 - i}.upsample.conv", None)
    out = {}
    for key, value in vae.state_dict().items():
        if ".mid_block.attentions.0." in key and key.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's AttnBlock uses 1×1 convolutions
        out[prefix + _map_key(key, prefixes)] = value
    return out


def _clip_state(text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CLIP text-model tensors without the `text_model.` level (absent in CLIPTextModel since transformers 5)."""
    return {k.removeprefix("text_model."): v for k, v in text_encoder.state_dict().items()}


def clip_to_ldm(text_encoder: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """OpenAI CLIP (HF layout) → `<prefix>text_model.*`, with the `position_ids` buffer real checkpoints carry."""
    state = _clip_state(text_encoder)
    n_pos = state["embeddings.position_embedding.weight"].shape[0]
    state.setdefault("embeddings.position_ids", torch.arange(n_pos)[None])
    return {f"{prefix}text_model.{k}": v for k, v in state.items() if not k.startswith("text_projection")}


def open_clip_to_ldm(text_encoder: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    """HF CLIP text model → OpenCLIP names under `prefix` (fused in_proj, resblocks, ln_final, text_projection)."""
    state = _clip_state(text_encoder)
    out = {
        prefix + "token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
        prefix + "positional_embedding": state.pop("embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": state.pop("final_layer_norm.weight"),
        prefix + "ln_final.bias": state.pop("final_layer_norm.bias"),
    }
    hidden = out[prefix + "ln_final.weight"].shape[0]
    projection = state.pop("text_projection.weight", None)
    out[prefix + "text_projection"] = (projection.T if projection is not None else torch.eye(hidden)).contiguous()
    layer_names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
                   "self_attn.out_proj": "attn.out_proj"}
    n_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layers."))
    for n in range(n_layers):
        src, dst = f"encoder.layers.{n}.", f"{prefix}transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            for old, new in layer_names.items():
                out[f"{dst}{new}.{kind}"] = state.pop(f"{src}{old}.{kind}")
    leftovers = [k for k in state if not k.endswith("position_ids")]
    if leftovers:
        raise KeyError(f"no OpenCLIP name for {leftovers}")
    return out


def pipeline_to_ldm(pipe, family: str) -> dict[str, torch.Tensor]:
    """All tensors of an SD1 / SD2 / SDXL pipeline in the original single-file layout."""
    tensors = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae)}
    if family == "sd1":
        tensors.update(clip_to_ldm(pipe.text_encoder, "cond_stage_model.transformer."))
    elif family == "sd2":
        tensors.update(open_clip_to_ldm(pipe.text_encoder, "cond_stage_model.model."))
    elif family == "sdxl":
        tensors.update(clip_to_ldm(pipe.text_encoder, "conditioner.embedders.0.transformer."))
        tensors.update(open_clip_to_ldm(pipe.text_encoder_2, "conditioner.embedders.1.model."))
    else:
        raise ValueError(family)
    return tensors


def write_single_file(pipe, family: str, path: Path, metadata: dict[str, str] | None = None) -> Path:
    """Save `pipe` as one original-layout `.safetensors` file at `path`."""
    tensors = {k: v.detach().contiguous() for k, v in pipeline_to_ldm(pipe, family).items()}
    save_file(tensors, str(path), metadata=metadata)
    return path
