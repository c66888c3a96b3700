"""Plain LoRA, LoCon (the same with 3×3 convolution targets) and DoRA (`use_dora`), on peft's LoRA.

File layout (kohya `networks.lora`, LyCORIS `locon`): `<name>.lora_down.weight` (peft lora_A; a k×k conv for a
k×k layer), `<name>.lora_up.weight` (peft lora_B; 1×1 for convs), `<name>.alpha`. DoRA adds `<name>.dora_scale`:
peft's magnitude is one value per OUTPUT channel (norm of each row of W + ΔW), which is LyCORIS's `wd_on_output`
layout — shape (out, 1) for Linear, (out, 1, 1, 1) for Conv2d. The older input-axis layout (1, in) normalises
the other way and cannot be expressed in peft, so it is refused when loading.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer

from ..errors import LorakitError
from .registry import ModuleState, ModuleSummary, NetworkType, Targets, check_consumed, pattern_config, \
    register, scalar, take


def peft_config(net_cfg: Any, targets: Targets, use_dora: bool | None = None, **_: Any) -> LoraConfig:
    """peft LoraConfig for exact module paths with per-module rank/alpha; `use_dora` overrides the config's.
    peft's lora_dropout (on the adapter's input) only for dropout_placement = 'peft': kohya's placement, rank and
    module dropout are hooks (`networks.dropout`)."""
    modules, r, alpha, ranks, alphas = pattern_config(targets)
    on_input = getattr(net_cfg, "dropout_placement", "kohya") == "peft"
    return LoraConfig(
        r=r, lora_alpha=alpha, rank_pattern=ranks, alpha_pattern=alphas, target_modules=modules,
        lora_dropout=getattr(net_cfg, "network_dropout", 0.0) if on_input else 0.0,
        use_dora=bool(getattr(net_cfg, "use_dora", False) if use_dora is None else use_dora),
        init_lora_weights=True,  # kaiming-uniform down, zero up: the initialisation kohya uses
    )


def to_file(state: ModuleState) -> dict[str, torch.Tensor]:
    """One module's peft tensors as kohya/LyCORIS keys (suffixes after the module name)."""
    state = dict(state)
    out = {
        "lora_down.weight": take(state, "lora_A", "LoRA module"),
        "lora_up.weight": take(state, "lora_B", "LoRA module"),
        "alpha": take(state, "alpha", "LoRA module"),
    }
    if "lora_magnitude_vector" in state:
        mag = state.pop("lora_magnitude_vector")
        dims = out["lora_up.weight"].dim()  # 2 for Linear, 4 for Conv2d
        out["dora_scale"] = mag.reshape(-1, *[1] * (dims - 1))  # (out,) / (1,out,1,1) -> (out,1) / (out,1,1,1)
    check_consumed(state, "LoRA module")
    return out


def from_file(tensors: dict[str, torch.Tensor]) -> ModuleState:
    """One module's kohya/LyCORIS LoRA tensors as peft's (the inverse of `to_file`)."""
    tensors = dict(tensors)
    up = take(tensors, "lora_up.weight", "LoRA module")
    state = {"lora_A": take(tensors, "lora_down.weight", "LoRA module"), "lora_B": up}
    state["alpha"] = tensors.pop("alpha") if "alpha" in tensors else scalar(up.shape[1])  # no alpha: scale 1
    if "dora_scale" in tensors:
        scale = tensors.pop("dora_scale")
        if scale.shape[0] != up.shape[0]:
            raise LorakitError(
                f"dora_scale of shape {tuple(scale.shape)} normalises per input channel (LyCORIS "
                "wd_on_output=False); peft's DoRA normalises per output channel",
                "retrain with LyCORIS wd_on_output=True (its default), or with lorakit's use_dora")
        state["lora_magnitude_vector"] = scale.reshape(-1) if up.dim() == 2 else scale.reshape(1, -1, 1, 1)
    check_consumed(tensors, "LoRA module")
    return state


def module_options(state: ModuleState) -> dict[str, Any]:
    """peft options a file module needs: DoRA when it has a magnitude."""
    return {"use_dora": "lora_magnitude_vector" in state}


def layer_rank_alpha(layer: Any, adapter: str) -> tuple[int, float]:
    """(rank, alpha) of a trained peft LoRA layer."""
    return int(layer.r[adapter]), float(layer.lora_alpha[adapter])


def layer_options(layer: Any, config: Any, adapter: str) -> dict[str, Any]:
    """Options of a trained layer that the metadata reports."""
    return {"use_dora": bool(layer.use_dora.get(adapter, False))}


def conv_args(summary: ModuleSummary) -> dict[str, str]:
    """`conv_dim` / `conv_alpha` network args as kohya and LyCORIS users write them (strings), when convs are
    trained."""
    if not summary.conv:
        return {}
    rank, alpha = max(set(summary.conv), key=summary.conv.count)
    return {"conv_dim": str(rank), "conv_alpha": f"{alpha:g}"}


def shape_args(summary: ModuleSummary) -> dict[str, str]:
    """conv_dim / conv_alpha and the per-block block_dims / block_alphas / conv_block_dims / conv_block_alphas, in
    the order and spelling sd-scripts users write them (train_network.py stores the network_args as passed)."""
    return {**conv_args(summary), **summary.block_args}


def lycoris_metadata(algo: str, summary: ModuleSummary, *flags: str, **extra: str) -> dict[str, str]:
    """LyCORIS network args as its users write them: the algo, the shape args, `extra`, then each of `flags` that
    the trained layers have on (as "True")."""
    args = {"algo": algo, **shape_args(summary), **extra, **{f: "True" for f in flags if summary.options.get(f)}}
    return {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps(args)}


def metadata(summary: ModuleSummary) -> dict[str, str]:
    """`networks.lora` (kohya) for LoRA/LoCon; DoRA is LyCORIS `locon` with `dora_wd`, kohya has no DoRA."""
    if summary.options.get("use_dora"):
        return lycoris_metadata("locon", summary, dora_wd="True", wd_on_output="True")
    args = shape_args(summary)
    return {"ss_network_module": "networks.lora", **({"ss_network_args": json.dumps(args)} if args else {})}


LORA = register(NetworkType(
    name="lora",
    config_names=("lora", "locon"),
    layer_class=LoraLayer,
    peft_keys=("lora_A", "lora_B", "lora_magnitude_vector"),
    file_suffixes=("lora_down.weight", "lora_up.weight", "dora_scale"),
    peft_config=peft_config,
    to_file=to_file,
    from_file=from_file,
    module_options=module_options,
    metadata=metadata,
    layer_rank_alpha=layer_rank_alpha,
    layer_options=layer_options,
    rank_key="lora_A",
))
