"""Which adapted modules each consumer of a LoRA file ignores: sd-scripts, A1111, ComfyUI, diffusers.

lorakit writes a kohya name for every Linear/Conv2d it adapts, and ComfyUI applies all of them. The other consumers
apply a subset and drop the rest without telling the user (or, for old diffusers and SDXL, refuse the file), so a
module trained outside that subset is wasted there. The rules below are written from each consumer's code (each
rule cites the file and function) and work on kohya module names alone: `ignored_by_consumers` is pure and
torch-free, so tests feed it names written by hand.

`planned_kohya_names` gives the names a run will write, from the `TargetPlan` that `lorakit plan` selects on the
model's weightless skeleton; `consumer_warnings` turns the verdict into the plan's warning lines, and
`consumer_problems` is what `lorakit train --strict` and `lorakit config validate --strict` refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ..errors import some_of
from ..families.names import FAMILY_BLOCKS, OPENCLIP_TE_PREFIXES
from .targets import TargetPlan

_TE_LAYER = re.compile(r"^(lora_te[12]?)_text_model_encoder_layers_(\d+)_(\w+)$")
_ATTENTION = ("self_attn_q_proj", "self_attn_k_proj", "self_attn_v_proj", "self_attn_out_proj")
_CLIP_MAP = (*_ATTENTION, "mlp_fc1", "mlp_fc2")  # ComfyUI's LORA_CLIP_MAP, in kohya spelling


def _sgm(family: str) -> bool:
    """Whether kohya names this family's UNet in the original (SGM) layout (SDXL) rather than diffusers paths."""
    return FAMILY_BLOCKS.get(family, (0, False))[1]


def _te_layer(name: str) -> tuple[str, int, str] | None:
    """(prefix, layer index, module) of a kohya text-encoder layer name, e.g. ('lora_te', 0, 'self_attn_q_proj')."""
    m = _TE_LAYER.match(name)
    return (m.group(1), int(m.group(2)), m.group(3)) if m else None


def _clip_mapped(name: str, layers: int = 10**6) -> bool:
    """A text-encoder name of a CLIP attention/MLP projection (in a layer below `layers`)."""
    found = _te_layer(name)
    return found is not None and found[2] in _CLIP_MAP and found[1] < layers


# -- sd-scripts -------------------------------------------------------------------------------------------------------
# kohya-ss/sd-scripts networks/lora.py, LoRANetwork.__init__ → create_modules: LoRA modules are built only for the
# Linear/Conv2d children of UNET_TARGET_REPLACE_MODULE (Transformer2DModel), UNET_TARGET_REPLACE_MODULE_CONV2D_3X3
# (ResnetBlock2D, Downsample2D, Upsample2D; added because create_network_from_weights passes modules_dim) and
# TEXT_ENCODER_TARGET_REPLACE_MODULE (CLIPAttention, CLIPSdpaAttention, CLIPMLP). load_weights calls
# load_state_dict(…, False) and merge_to matches keys by lora_name, so any other key is dropped without a message:
# conv_in, conv_out, the time embedding, SDXL's label_emb, CLIP's text_projection.
_SD_SCRIPTS_UNET = re.compile(r"^lora_unet_((down|up)_blocks_\d+_(attentions|resnets|downsamplers|upsamplers)_\d+"
                              r"|mid_block_(attentions|resnets)_\d+)_")
# SDXL (library/sdxl_original_unet.py): input_blocks.0 is conv_in; time_embed, label_emb and out sit outside.
_SD_SCRIPTS_UNET_SGM = re.compile(r"^lora_unet_(input_blocks_[1-9]\d*|middle_block_\d+|output_blocks_\d+)_")


def _sd_scripts(family: str, names: list[str]) -> list[str]:
    """Names sd-scripts' networks.lora never builds a module for."""
    unet = _SD_SCRIPTS_UNET_SGM if _sgm(family) else _SD_SCRIPTS_UNET
    return [n for n in names if not (unet.match(n) if n.startswith("lora_unet_") else _clip_mapped(n))]


# -- A1111 --------------------------------------------------------------------------------------------------------------
# AUTOMATIC1111/stable-diffusion-webui extensions-builtin/Lora/networks.py, convert_diffusers_name_to_compvis: the
# diffusers-path names of SD1/SD2 that it converts to the original UNet's module names (anything else fails to match).
_A1111_UNET = re.compile(r"^lora_unet_(conv_in|conv_out|time_embedding_linear_\d+"
                         r"|(down|up)_blocks_\d+_(attentions|resnets)_\d+_\w+|mid_block_(attentions|resnets)_\d+_\w+"
                         r"|down_blocks_\d+_downsamplers_0_conv|up_blocks_\d+_upsamplers_0_conv)$")


def _a1111_openclip(names: list[str]) -> list[str]:
    """OpenCLIP names A1111 ignores. networks.py load_network maps q/k/v_proj to the layer's MultiheadAttention
    (re_x_proj) and out_proj to its out_proj Linear, whose own forward MultiheadAttention never calls;
    network_apply_weights then patches in_proj/out_proj only `if … module_q and module_k and module_v and
    module_out`. So a layer's attention counts only with all four; fc1/fc2 map to mlp.c_fc/c_proj and count."""
    present: dict[tuple[str, int], set[str]] = {}
    for n in names:
        found = _te_layer(n)
        if found:
            present.setdefault(found[:2], set()).add(found[2])
    ignored = []
    for n in names:
        found = _te_layer(n)
        if found is None or found[2] not in _CLIP_MAP:
            ignored.append(n)  # convert_diffusers_name_to_compvis has no OpenCLIP module for it
        elif found[2] in _ATTENTION and not set(_ATTENTION) <= present[found[:2]]:
            ignored.append(n)
    return ignored


def _a1111(family: str, names: list[str]) -> list[str]:
    """Names A1111's built-in Lora extension does not apply."""
    openclip = OPENCLIP_TE_PREFIXES.get(family, ())
    ignored: list[str] = []
    for n in names:
        if n.startswith("lora_unet_"):
            # SDXL: load_network's fallback replaces lora_unet with diffusion_model, which names every module
            if not _sgm(family) and not _A1111_UNET.match(n):
                ignored.append(n)
        elif not n.startswith(tuple(p + "_" for p in openclip)):
            # Hugging Face CLIP: lora_te_text_model_encoder_layers_… (convert_…) or lora_te1_text_model_… (the
            # lora_te1_text_model → 0_transformer_text_model fallback) name any module of it
            if not re.match(r"^(lora_te_text_model_encoder_layers_\d+_|lora_te1_text_model_)\w+$", n):
                ignored.append(n)
    ignored += _a1111_openclip([n for n in names if n.startswith(tuple(p + "_" for p in openclip))])
    return sorted(ignored)


# -- ComfyUI ------------------------------------------------------------------------------------------------------------
# comfyanonymous/ComfyUI comfy/lora.py model_lora_keys_unet: every `diffusion_model.*.weight` of the original UNet
# (so every SGM name), and every diffusers path of comfy/utils.py unet_to_diffusers — resnets, attentions,
# samplers and UNET_MAP_BASIC (conv_in, conv_norm_out, conv_out, time_embedding, add/class_embedding).
_COMFY_UNET = re.compile(
    r"^lora_unet_(conv_in|conv_out|conv_norm_out|(time|add|class)_embedding_linear_[12]"
    r"|(down_blocks_\d+|up_blocks_\d+|mid_block)_resnets_\d+_(conv1|conv2|time_emb_proj|conv_shortcut|norm1|norm2)"
    r"|(down_blocks_\d+|up_blocks_\d+|mid_block)_attentions_\d+_(proj_in|proj_out|norm|transformer_blocks_\d+_"
    r"(norm[123]|attn[12]_(to_q|to_k|to_v|to_out_0)|ff_net_0_proj|ff_net_2))"
    r"|down_blocks_\d+_downsamplers_0_conv|up_blocks_\d+_upsamplers_0_conv)$")
COMFY_CLIP_LAYERS = 32  # model_lora_keys_clip: `for b in range(32)`


def _comfyui(family: str, names: list[str]) -> list[str]:
    """Names ComfyUI does not map. Text encoders: model_lora_keys_clip maps only LORA_CLIP_MAP (self_attn
    q/k/v/out_proj, mlp fc1/fc2) of layers 0–31, as lora_te_/lora_te1_/lora_te2_text_model_encoder_layers_…"""
    return [n for n in names if not (
        (_sgm(family) or _COMFY_UNET.match(n)) if n.startswith("lora_unet_") else _clip_mapped(n, COMFY_CLIP_LAYERS))]


# -- diffusers ----------------------------------------------------------------------------------------------------------
def _diffusers(family: str, names: list[str]) -> list[str]:
    """Text-encoder names diffusers' load_lora_weights does not apply: lora_conversion_utils
    _convert_text_encoder_lora_key spells only text_model.encoder.layers.N.self_attn.{q,k,v,out}_proj and mlp.fc1/2
    right (text_projection comes out as text_model.text_projection, which no model has). Every UNet name maps."""
    return [n for n in names if not n.startswith("lora_unet_") and not _clip_mapped(n)]


# huggingface/diffusers before v0.39.0 (fixed by #14006): lora_conversion_utils._convert_unet_lora_key had no
# mapping for the UNet's top-level modules, so SD1/SD2's conv_in/conv_out/time_embedding came out as conv.in, … and
# were not applied; for SDXL, _maybe_map_sgm_blocks_to_diffusers raises ValueError on time_embed, label_emb, out and
# input_blocks_0_0 (conv_in), so load_lora_weights loads nothing of the file.
_OLD_DIFFUSERS_UNET = re.compile(r"^lora_unet_(conv_in|conv_out|time_embedding_linear_\d+"
                                 r"|time_embed_\d+|label_emb_\d+_\d+|out_\d+|input_blocks_0_0)$")


def _diffusers_before_039(family: str, names: list[str]) -> list[str]:
    """UNet names diffusers < 0.39 cannot load (besides what every diffusers ignores)."""
    return [n for n in names if _OLD_DIFFUSERS_UNET.match(n)]


# -- the table ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Consumer:
    """One consumer: which names it ignores and what the user can do about it."""

    name: str
    ignored: Callable[[str, list[str]], list[str]]
    hint: Callable[[str, list[str]], str]


def _settings(ignored: list[str]) -> str:
    """The setting(s) that chose these modules: network.target_modules (UNet), text_encoder_target_modules."""
    keys = [k for k, hit in (("network.target_modules", any(n.startswith("lora_unet_") for n in ignored)),
                             ("network.text_encoder_target_modules", any(n.startswith("lora_te") for n in ignored)))
            if hit]
    return " / ".join(keys)


def _leave_out(what: str) -> Callable[[str, list[str]], str]:
    """A hint that says why the consumer drops them and which setting to change."""
    return lambda family, ignored: f"{what}; leave them out of {_settings(ignored)}"


def _a1111_hint(family: str, ignored: list[str]) -> str:
    """Name the projections to add when A1111 drops a partial OpenCLIP attention."""
    mods = {found[2] for n in ignored if (found := _te_layer(n))}
    if mods & set(_ATTENTION):
        missing = [a.removeprefix("self_attn_") for a in _ATTENTION if a not in mods]
        return ("A1111 applies an OpenCLIP text encoder's attention (SD2's, SDXL's second) only when q_proj, k_proj, "
                f"v_proj and out_proj all have a LoRA; add {' and '.join(missing)} to "
                "network.text_encoder_target_modules (or leave it empty)")
    return "A1111's Lora extension has no module for them; leave them out of network.target_modules"


CONSUMERS: tuple[Consumer, ...] = (
    Consumer("sd-scripts", _sd_scripts, _leave_out(
        "sd-scripts builds LoRA modules only inside the UNet's transformer, resnet and sampler blocks and CLIP's "
        "attention/MLP, and drops the rest without a message")),
    Consumer("A1111", _a1111, _a1111_hint),
    Consumer("ComfyUI", _comfyui, _leave_out("ComfyUI maps the UNet's layers and CLIP's attention/MLP projections "
                                             "only (\"lora key not loaded\")")),
    Consumer("diffusers", _diffusers, _leave_out("diffusers' load_lora_weights maps CLIP's attention/MLP "
                                                 "projections only")),
    Consumer("diffusers < 0.39", _diffusers_before_039, lambda family, ignored: (
        "diffusers before 0.39 does not map the UNet's conv_in, conv_out and time/label embeddings" +
        (" and refuses the whole SDXL file" if _sgm(family) else "") +
        "; leave them out of network.target_modules, or load with diffusers 0.39 or later")),
)


def ignored_by_consumers(family_name: str, kohya_names: Iterable[str]) -> dict[str, list[str]]:
    """{consumer: sorted kohya module names it ignores} for a file of `family_name` ("sd1", "sd2", "sdxl") holding
    `kohya_names` (e.g. "lora_unet_conv_in", "lora_te_text_model_encoder_layers_0_self_attn_q_proj"); consumers
    that apply every module are left out, so an empty dict means every consumer applies the whole file."""
    names = sorted(set(kohya_names))
    out = {}
    for consumer in CONSUMERS:
        ignored = sorted(consumer.ignored(family_name, names))
        if ignored:
            out[consumer.name] = ignored
    return out


# -- the plan's side ------------------------------------------------------------------------------------------------------
def planned_kohya_names(plan: TargetPlan) -> list[str]:
    """The kohya names a run with this target plan writes (as `Family.kohya_unet_name` / `kohya_te_name` name
    them), derived from the plan's `ModelInfo` so that a weightless skeleton is enough."""
    from ..families import get_family
    from ..families import unet_layout as layout

    if plan.info is None:
        raise ValueError("a TargetPlan without its ModelInfo has no family to name its modules by")
    family = get_family(plan.info.family)
    shape = _unet_shape([c.path for c in plan.info.unet])
    names = []
    for path in plan.unet:
        original = layout.sgm_path(path, shape) if family.kohya_sgm_names else path
        names.append("lora_unet_" + (original or path).replace(".", "_"))
    names += [family.kohya_te_name(i, p) for i, targets in enumerate(plan.text_encoders) for p in targets]
    return names


def _unet_shape(paths: list[str]) -> Any:
    """The `UnetShape` (resnets, attention, sampler per level) of a UNet from its layer paths alone."""
    from ..families.unet_layout import UnetShape

    def levels(kind: str, sampler: str) -> tuple[tuple[int, bool, bool], ...]:
        count = len({int(m.group(1)) for p in paths if (m := re.match(rf"{kind}\.(\d+)\.", p))})
        out = []
        for i in range(count):
            pre = f"{kind}.{i}."
            resnets = {p[len(pre):].split(".")[1] for p in paths if p.startswith(pre + "resnets.")}
            out.append((len(resnets), any(p.startswith(pre + "attentions.") for p in paths),
                        any(p.startswith(pre + sampler + ".") for p in paths)))
        return tuple(out)

    return UnetShape(levels("down_blocks", "downsamplers"), levels("up_blocks", "upsamplers"),
                     any(p.startswith("mid_block.attentions.") for p in paths))


def consumer_warnings(plan: TargetPlan) -> list[str]:
    """One line per consumer that would ignore some of the plan's modules: how many, the first few, what to do."""
    names = planned_kohya_names(plan)
    family = plan.info.family if plan.info else ""
    by_name = {c.name: c for c in CONSUMERS}
    return [f"{consumer} ignores {len(ignored)} of {len(names)} modules: {some_of(ignored)} — "
            f"{by_name[consumer].hint(family, ignored)}"
            for consumer, ignored in ignored_by_consumers(family, names).items()]


def consumer_problems(cfg: Any) -> list[str]:
    """`consumer_warnings` of a config's network on its model's skeleton (what `--strict` refuses). A model or
    selection that cannot be read gives none: the run's own checks report those."""
    from ..errors import LorakitError
    from .targets import model_skeleton, select_targets

    try:
        plan = select_targets(model_skeleton(cfg.model), cfg.network)
    except (LorakitError, OSError, ValueError, KeyError):
        return []
    return [f"network: {w}" for w in consumer_warnings(plan)]
