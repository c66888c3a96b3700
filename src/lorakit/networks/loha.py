"""LoHa (LyCORIS): ΔW = (w1a @ w1b) ⊙ (w2a @ w2b) · alpha / r, on peft's LoHa.

peft's LoHa is LyCORIS's (the same parameter names and shapes, copied from it), so a module converts key for key:
`<name>.hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, `alpha`, and `hada_t1`/`hada_t2` when the convs are
Tucker-decomposed (peft `use_effective_conv2d`, LyCORIS `use_tucker`). Metadata: `lycoris.kohya`, algo `loha`.
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoHaConfig
from peft.tuners.loha import LoHaLayer

from .lora import lycoris_metadata
from .registry import ModuleState, ModuleSummary, NetworkType, Targets, check_consumed, pattern_config, register, \
    scalar, take

KEYS = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")
TUCKER = ("hada_t1", "hada_t2")


def peft_config(net_cfg: Any, targets: Targets, use_effective_conv2d: bool = False, **_: Any) -> LoHaConfig:
    """peft LoHaConfig for exact module paths with per-module rank/alpha (Tucker convs only when asked).

    module_dropout is peft's, which is LyCORIS's (`lycoris/modules/loha.py` LohaModule.forward: in training,
    `torch.rand(1) < p` returns the original forward; peft adds the update when `torch.rand(1) > p`). rank_dropout is
    refused (`findings.dropout_problems`): peft's LoHa always rescales the kept rows of ΔW by 1/(kept fraction),
    LyCORIS's only with rank_dropout_scale, which its sd-scripts entry point never passes."""
    modules, r, alpha, ranks, alphas = pattern_config(targets)
    return LoHaConfig(r=r, alpha=alpha, rank_pattern=ranks, alpha_pattern=alphas, target_modules=modules,
                      use_effective_conv2d=use_effective_conv2d, init_weights=True,
                      module_dropout=getattr(net_cfg, "module_dropout", 0.0))


def to_file(state: ModuleState) -> dict[str, torch.Tensor]:
    """One module's peft LoHa tensors as LyCORIS keys (identical names and shapes)."""
    state = dict(state)
    out = {k: take(state, k, "LoHa module") for k in (*KEYS, "alpha")}
    out.update({k: state.pop(k) for k in TUCKER if k in state})
    check_consumed(state, "LoHa module")
    return out


def from_file(tensors: dict[str, torch.Tensor]) -> ModuleState:
    """One module's LyCORIS LoHa tensors as peft's (no alpha in the file: scale 1, as LyCORIS and ComfyUI)."""
    tensors = dict(tensors)
    state = {k: take(tensors, k, "LoHa module") for k in KEYS}
    state["alpha"] = tensors.pop("alpha") if "alpha" in tensors else scalar(state["hada_w1_b"].shape[0])
    state.update({k: tensors.pop(k) for k in TUCKER if k in tensors})
    check_consumed(tensors, "LoHa module")
    return state


def module_options(state: ModuleState) -> dict[str, Any]:
    """Tucker-decomposed convs need peft's effective-conv2d layout."""
    return {"use_effective_conv2d": "hada_t1" in state}


def layer_options(layer: Any, config: Any, adapter: str) -> dict[str, Any]:
    """Tucker convs, reported as LyCORIS's use_tucker."""
    return {"use_tucker": bool(adapter in layer.hada_t1)}


def metadata(summary: ModuleSummary) -> dict[str, str]:
    """LyCORIS network args as its users write them."""
    return lycoris_metadata("loha", summary, "use_tucker")


LOHA = register(NetworkType(
    name="loha",
    config_names=("loha",),
    layer_class=LoHaLayer,
    peft_keys=(*KEYS, *TUCKER),
    peft_config=peft_config,
    to_file=to_file,
    from_file=from_file,
    module_options=module_options,
    metadata=metadata,
    layer_options=layer_options,
    rank_key="hada_w1_b",
))
