"""LoKr (LyCORIS): ΔW = kron(w1, w2) · alpha / r, each half a full matrix or a rank-r product, on peft's LoKr.

File keys: `<name>.lokr_w1` or `lokr_w1_a`/`lokr_w1_b`, `lokr_w2` or `lokr_w2_a`/`lokr_w2_b` (`lokr_t2` with Tucker
convs), `alpha`. peft's names and shapes are LyCORIS's. One difference in scale: when BOTH halves are full matrices
there is no rank in the file, and LyCORIS, ComfyUI and A1111 apply scale 1 (LyCORIS writes alpha = its dim), while
peft scales by alpha / r. The conversion folds peft's alpha / r into w1 and writes alpha = r, so every consumer
computes the trained ΔW; reading such a module back gives peft r = alpha = the file's alpha (scale 1).
"""

from __future__ import annotations

from typing import Any

import torch
from peft import LoKrConfig
from peft.tuners.lokr import LoKrLayer

from .lora import lycoris_metadata
from .registry import (ModuleState, ModuleSummary, NetworkType, Targets, check_consumed, lycoris_rank_alpha,
                       pattern_config, register, scalar, take)

W1 = ("lokr_w1", "lokr_w1_a", "lokr_w1_b")
W2 = ("lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


def peft_config(net_cfg: Any, targets: Targets, decompose_factor: int | None = None, decompose_both: bool = False,
                use_effective_conv2d: bool = False, **_: Any) -> LoKrConfig:
    """peft LoKrConfig for exact module paths with per-module rank/alpha; the factor is `network.lokr_factor`
    unless given. LyCORIS's initialisation (w2 zero) so the untrained network changes nothing.

    rank_dropout and module_dropout are peft's, which are LyCORIS's as sd-scripts runs it (`lycoris/modules/lokr.py`
    LokrModule.get_weight / forward): in training, each forward keeps the rows of ΔW where `torch.rand(out) > p`,
    unscaled (rank_dropout_scale off: `lycoris/kohya.py` create_network never passes it on), and skips the whole
    update when `torch.rand(1) < p` (peft: adds it when `torch.rand(1) > p`, a draw it makes even at p = 0)."""
    modules, r, alpha, ranks, alphas = pattern_config(targets)
    factor = decompose_factor if decompose_factor is not None else getattr(net_cfg, "lokr_factor", -1)
    return LoKrConfig(r=r, alpha=alpha, rank_pattern=ranks, alpha_pattern=alphas, target_modules=modules,
                      decompose_factor=factor, decompose_both=decompose_both,
                      use_effective_conv2d=use_effective_conv2d, init_weights="lycoris",
                      rank_dropout=getattr(net_cfg, "rank_dropout", 0.0),
                      module_dropout=getattr(net_cfg, "module_dropout", 0.0), rank_dropout_scale=False)


def _pop_half(tensors: dict[str, torch.Tensor], full: str, a: str, b: str, where: str) -> dict[str, torch.Tensor]:
    """One Kronecker half: the full matrix, or its two low-rank factors."""
    if full in tensors:
        return {full: tensors.pop(full)}
    return {a: take(tensors, a, where), b: take(tensors, b, where)}


def to_file(state: ModuleState) -> dict[str, torch.Tensor]:
    """One module's peft LoKr tensors as LyCORIS keys (alpha / r folded into w1 when both halves are full)."""
    state = dict(state)
    where = "LoKr module"
    alpha, rank = float(take(state, "alpha", where)), float(take(state, "rank", where))
    out = _pop_half(state, "lokr_w1", "lokr_w1_a", "lokr_w1_b", where)
    out.update(_pop_half(state, "lokr_w2", "lokr_w2_a", "lokr_w2_b", where))
    if "lokr_t2" in state:
        out["lokr_t2"] = state.pop("lokr_t2")
    if "lokr_w1" in out and "lokr_w2" in out:  # consumers use scale 1 here: the file carries peft's scale in w1
        if alpha != rank:
            out["lokr_w1"] = out["lokr_w1"].float() * (alpha / rank)
        alpha = rank
    out["alpha"] = scalar(alpha)
    check_consumed(state, where)
    return out


def from_file(tensors: dict[str, torch.Tensor]) -> ModuleState:
    """One module's LyCORIS LoKr tensors as peft's (rank from the low-rank factors; see the module docstring for
    two full halves)."""
    tensors, where = dict(tensors), "LoKr module"
    state = _pop_half(tensors, "lokr_w1", "lokr_w1_a", "lokr_w1_b", where)
    state.update(_pop_half(tensors, "lokr_w2", "lokr_w2_a", "lokr_w2_b", where))
    if "lokr_t2" in tensors:
        state["lokr_t2"] = tensors.pop("lokr_t2")
    alpha = float(tensors.pop("alpha")) if "alpha" in tensors else None
    if "lokr_w2" in state and "lokr_w1" in state:
        b, d = state["lokr_w2"].shape[:2]
        # peft keeps a half full only when r >= max(b, d) / 2; LyCORIS wrote alpha = its dim, which satisfies it
        rank = int(alpha) if alpha is not None and alpha == int(alpha) and alpha >= max(b, d) / 2 else max(b, d)
        alpha = float(rank)
    else:
        rank = (state["lokr_w2_b"] if "lokr_w2_b" in state else state["lokr_w1_b"]).shape[0]
        alpha = float(rank) if alpha is None else alpha
    state["alpha"], state["rank"] = scalar(alpha), scalar(rank)
    check_consumed(tensors, where)
    return state


def module_options(state: ModuleState) -> dict[str, Any]:
    """A factorised w1 needs peft's decompose_both; Tucker convs its effective-conv2d layout."""
    return {"decompose_both": "lokr_w1_a" in state, "use_effective_conv2d": "lokr_t2" in state}


def file_rank_alpha(layer: Any, adapter: str) -> tuple[int, float]:
    """(rank, alpha) as the file states it: alpha = rank for a module with two full halves (scale 1)."""
    rank, alpha = lycoris_rank_alpha(layer, adapter)
    full = adapter in layer.lokr_w1 and adapter in layer.lokr_w2
    return rank, float(rank) if full else alpha


def fit_state(state: ModuleState, rank: int, alpha: float) -> ModuleState:
    """A file module with two full halves (scale 1, any rank) made to fit a layer of another rank/alpha: w1 carries
    the inverse of the layer's alpha / rank, so the layer computes the file's ΔW (resuming a LoKr)."""
    if not ("lokr_w1" in state and "lokr_w2" in state) or float(state["alpha"]) != float(state["rank"]):
        return state
    return {**state, "lokr_w1": state["lokr_w1"].float() * (rank / alpha), "alpha": scalar(alpha),
            "rank": scalar(rank)}


def layer_options(layer: Any, config: Any, adapter: str) -> dict[str, Any]:
    """The factor and decomposition choices, from the component's peft config."""
    return {"factor": int(getattr(config, "decompose_factor", -1)),
            "decompose_both": bool(getattr(config, "decompose_both", False)),
            "use_tucker": adapter in layer.lokr_t2}


def metadata(summary: ModuleSummary) -> dict[str, str]:
    """LyCORIS network args as its users write them (`factor` always: it decides the file's shapes)."""
    return lycoris_metadata("lokr", summary, "decompose_both", "use_tucker",
                            factor=str(summary.options.get("factor", -1)))


LOKR = register(NetworkType(
    name="lokr",
    config_names=("lokr",),
    layer_class=LoKrLayer,
    peft_keys=(*W1, *W2),
    peft_config=peft_config,
    to_file=to_file,
    from_file=from_file,
    module_options=module_options,
    metadata=metadata,
    layer_options=layer_options,
    file_rank_alpha=file_rank_alpha,
    fit_state=fit_state,
    needs_rank=True,
))
