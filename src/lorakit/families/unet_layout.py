"""Where each diffusers UNet module sits in the original (SGM/LDM) UNet: its path there and its block name.

kohya sd-scripts trains SDXL on its own copy of the original UNet, so SDXL LoRA files name modules by that layout
(`input_blocks.4.1.transformer_blocks.0.attn1.to_q`, `input_blocks.1.0.in_layers.2`, `input_blocks.3.0.op`, …).
"LoRA block weight" names (TrainTrain, sd-webui-lora-block-weight, sd-scripts' `block_dims`) count the same
`input_blocks`/`output_blocks` indices for every family: IN00 is `input_blocks.0` (conv_in), MID the middle block.

The layout is read from the UNet's own structure (how many resnets each level has, which levels have attention,
a down/upsampler), the same way sd-scripts' `make_unet_conversion_map` and ComfyUI's `unet_to_diffusers` derive it
from the config, so real and tiny models follow one rule. Every index here was checked against those two.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from .names import BASE, MID, canonical_block  # noqa: F401  (BASE: TrainTrain's name for the text encoders)

# diffusers ResnetBlock2D child → original ResBlock child (sd-scripts `unet_conversion_map_resnet`)
RESNET_RENAMES = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# Modules outside the input/middle/output blocks: no block name (sd-scripts never builds a LoRA for them).
OUTSIDE_BLOCKS = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size/crop/pooled-text conditioning MLP
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


@dataclass(frozen=True)
class Slot:
    """One diffusers sub-module prefix, the original-layout prefix it maps to and its block name (None: none)."""

    diffusers: str
    sgm: str
    block: str | None
    resnet: bool = False  # children are renamed by RESNET_RENAMES


@dataclass(frozen=True)
class UnetShape:
    """What the layout depends on: per level, (resnets, has attention, has down/upsampler); mid has attention."""

    down: tuple[tuple[int, bool, bool], ...]
    up: tuple[tuple[int, bool, bool], ...]
    mid_attention: bool


def unet_shape(unet: torch.nn.Module) -> UnetShape:
    """The level structure of a diffusers UNet2DConditionModel (works on a peft-wrapped one too)."""

    def level(block: Any, sampler: str) -> tuple[int, bool, bool]:
        return (len(block.resnets), bool(getattr(block, "attentions", None)), bool(getattr(block, sampler, None)))

    mid = getattr(unet, "mid_block", None)
    return UnetShape(
        down=tuple(level(b, "downsamplers") for b in unet.down_blocks),
        up=tuple(level(b, "upsamplers") for b in unet.up_blocks),
        mid_attention=bool(getattr(mid, "attentions", None)),
    )


def in_name(index: int) -> str:
    """'IN00', 'IN01', …: the block name of `input_blocks.<index>`."""
    return f"IN{index:02d}"


def out_name(index: int) -> str:
    """'OUT00', …: the block name of `output_blocks.<index>`."""
    return f"OUT{index:02d}"


def _down_slots(shape: UnetShape) -> list[Slot]:
    slots = [Slot("conv_in", "input_blocks.0.0", in_name(0))]
    n = 1  # input_blocks.0 is conv_in; each resnet (+ its attention) is one input block, a downsampler another
    for i, (resnets, attention, sampler) in enumerate(shape.down):
        for j in range(resnets):
            slots.append(Slot(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{n}.0", in_name(n), resnet=True))
            if attention:
                slots.append(Slot(f"down_blocks.{i}.attentions.{j}", f"input_blocks.{n}.1", in_name(n)))
            n += 1
        if sampler:  # diffusers Downsample2D.conv is the original Downsample.op
            slots.append(Slot(f"down_blocks.{i}.downsamplers.0.conv", f"input_blocks.{n}.0.op", in_name(n)))
            n += 1
    return slots


def _mid_slots(shape: UnetShape) -> list[Slot]:
    # original middle_block = [ResBlock, SpatialTransformer, ResBlock] (without attention: [ResBlock, ResBlock])
    second = 2 if shape.mid_attention else 1
    slots = [Slot("mid_block.resnets.0", "middle_block.0", MID, resnet=True),
             Slot("mid_block.resnets.1", f"middle_block.{second}", MID, resnet=True)]
    if shape.mid_attention:
        slots.append(Slot("mid_block.attentions.0", "middle_block.1", MID))
    return slots


def _up_slots(shape: UnetShape) -> list[Slot]:
    slots, n = [], 0
    for i, (resnets, attention, sampler) in enumerate(shape.up):
        for j in range(resnets):
            slots.append(Slot(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{n}.0", out_name(n), resnet=True))
            if attention:
                slots.append(Slot(f"up_blocks.{i}.attentions.{j}", f"output_blocks.{n}.1", out_name(n)))
            if sampler and j == resnets - 1:  # the upsampler ends the level's last output block, after its attention
                at = 2 if attention else 1
                slots.append(Slot(f"up_blocks.{i}.upsamplers.0.conv", f"output_blocks.{n}.{at}.conv", out_name(n)))
            n += 1
    return slots


@lru_cache(maxsize=32)
def slots_for(shape: UnetShape) -> dict[str, Slot]:
    """{diffusers prefix: Slot} of every part of a UNet of this shape."""
    slots = _down_slots(shape) + _mid_slots(shape) + _up_slots(shape)
    slots += [Slot(d, s, None) for d, s in OUTSIDE_BLOCKS.items()]
    return {s.diffusers: s for s in slots}


def block_names(shape: UnetShape) -> tuple[str, ...]:
    """BASE, IN00…, MID, OUT00…: every block name of this UNet shape, in order."""
    ins = 1 + sum(r + bool(s) for r, _, s in shape.down)
    outs = sum(r for r, _, _ in shape.up)
    return (BASE, *map(in_name, range(ins)), MID, *map(out_name, range(outs)))


_LEVEL = re.compile(r"^((?:down|up)_blocks\.\d+\.(?:resnets|attentions)\.\d+|mid_block\.(?:resnets|attentions)\.\d+)")


def find_slot(path: str, shape: UnetShape) -> tuple[Slot, str] | None:
    """(the Slot holding `path`, the rest of the path below it), or None for a path outside every slot."""
    slots = slots_for(shape)
    m = _LEVEL.match(path)
    head = m.group(1) if m else next((p for p in slots if path == p or path.startswith(p + ".")), None)
    if head is None or head not in slots:
        return None
    return slots[head], path[len(head) + 1:]


def sgm_path(path: str, shape: UnetShape) -> str | None:
    """The original-layout path of a diffusers UNet module path (None: the original has no such module)."""
    found = find_slot(path, shape)
    if found is None:
        return None
    slot, rest = found
    if slot.resnet and rest:
        first, _, below = rest.partition(".")
        rest = RESNET_RENAMES.get(first, first) + (f".{below}" if below else "")
    return f"{slot.sgm}.{rest}" if rest else slot.sgm




def config_key(unet: torch.nn.Module) -> str:
    """A string that is equal for UNets of the same architecture (their diffusers config)."""
    config = getattr(unet, "config", None)
    if config is None:
        return str(id(unet))
    # `_name_or_path`, `_diffusers_version`, …: where it came from, not what it is
    return json.dumps({k: v for k, v in config.items() if not k.startswith("_")}, sort_keys=True, default=str)


LAYERS = (torch.nn.Linear, torch.nn.Conv2d)


def layer_paths(module: torch.nn.Module) -> list[str]:
    """Paths of every Linear and Conv2d in `module`, in module order (see `base_layers`)."""
    return list(base_layers(module))


def base_layers(module: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """{path: layer} of every Linear and Conv2d of the model itself, in module order. A layer that peft has wrapped
    counts once, by its original path (the wrapper's), and the adapter's own layers (lora_A, …) are not counted."""
    out: dict[str, torch.nn.Module] = {}
    skip = None
    for path, mod in module.named_modules():  # pre-order: a tuner layer comes before its children
        if skip is not None and path.startswith(skip):
            continue
        skip = None
        base = getattr(mod, "base_layer", None)  # peft tuner layers keep the layer they wrap as `base_layer`
        if isinstance(base, torch.nn.Module):
            skip = path + "."
            while isinstance(getattr(base, "base_layer", None), torch.nn.Module):
                base = base.base_layer
            if isinstance(base, LAYERS):
                out[path] = base
        elif isinstance(mod, LAYERS):
            out[path] = mod
    return out


def element(path: str) -> str | None:
    """'cross_attention' (attn2), 'self_attention' (attn1) or None: TrainTrain's element filter on a module path."""
    parts = path.split(".")
    if "attn2" in parts:
        return "cross_attention"
    if "attn1" in parts:
        return "self_attention"
    return None
