"""kohya's dropouts on peft's LoRA layers (LoRA, LoCon; DoRA: module dropout only), installed as forward hooks.

sd-scripts `networks/lora.py` `LoRAModule.forward`, in training only and in this order of random draws:
- module dropout: `torch.rand(1) < p` (once per module and forward) and the module returns the original forward;
- neuron dropout (`network_dropout`): `F.dropout` on the down projection's output lx = lora_down(x);
- rank dropout: `torch.rand((batch, rank)) > p` over lx's ranks, one mask per sample (broadcast over the tokens of
  3-D input and the pixels of a convolution), and the update scaled by 1/(1 − p).
peft's own `lora_dropout` drops the adapter's input instead; `dropout_placement = 'peft'` keeps that one.

Why hooks: the modules, their parameters and so the state-dict keys stay exactly peft's. A forward hook on
`lora_A[adapter]` replaces lx (1/(1 − p) is folded into lx: lora_B is linear without a bias, so lora_B(lx)·s/(1 − p)
= lora_B(lx/(1 − p))·s). A pre-hook on the tuner layer draws module dropout and, when it hits, takes the adapter out
of that layer's active adapters for that one call (a post-hook that always runs puts it back): the layer then
computes exactly what it computes without the adapter, for DoRA too, while other adapters on the layer (Difference's
frozen copy machine) stay applied. A seeded run therefore draws kohya's masks; under gradient checkpointing the
recomputation draws them again from the RNG state torch.utils.checkpoint restores.

DoRA gets no hook on lora_A: peft's DoRA rebuilds W + ΔW for its weight norm by calling lora_B(lora_A(eye)), so the
hook would drop entries of the weight itself (`findings.dropout_problems` refuses those settings). LoHa and LoKr use
peft's own rank/module dropout, set in their peft configs (`loha.py`, `lokr.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from torch.utils.hooks import RemovableHandle

from ..errors import ConfigError, LorakitError
from .findings import dropout_problems
from .registry import ADAPTER

HOOKS = "_lorakit_dropout"  # tuner layer attribute: {adapter: AdapterDropout} (no parameter, no state-dict key)


@dataclass(frozen=True)
class DropoutSettings:
    """The network section's dropouts, as the LoRA hooks apply them."""

    neuron: float  # network_dropout on the down projection's output (0 when dropout_placement is 'peft')
    rank: float
    module: float

    @property
    def any_on(self) -> bool:
        return bool(self.neuron or self.rank or self.module)


def dropout_settings(net_cfg: Any) -> DropoutSettings:
    """Read every dropout field of the network section (each run reads them all, whatever the type) and refuse
    what the type cannot apply (the same rules as `config validate`)."""
    neuron, placement = float(net_cfg.network_dropout), net_cfg.dropout_placement
    rank, module = float(net_cfg.rank_dropout), float(net_cfg.module_dropout)
    problems = dropout_problems(net_cfg)
    if problems:
        raise ConfigError([f"{key}: {message}" for key, message in problems])
    return DropoutSettings(neuron if placement == "kohya" else 0.0, rank, module)


@dataclass
class AdapterDropout:
    """One adapter's dropouts on one peft LoRA layer: the hooks' state and handles."""

    adapter: str
    settings: DropoutSettings
    rank_dim: int  # where lx keeps its ranks: 1 for a convolution (B, r, H, W), -1 for a Linear (B, …, r)
    handles: list[RemovableHandle] = field(default_factory=list)
    hidden: Any = None  # the layer's active adapters while module dropout has taken this one out

    def before_layer(self, layer: LoraLayer, args: tuple) -> None:
        """Module dropout: with probability p, this call of the layer runs without the adapter."""
        self.hidden = None
        if not (self.settings.module and layer.training) or layer.merged or layer.disable_adapters:
            return
        active = list(layer.active_adapters)
        if self.adapter in active and torch.rand(1) < self.settings.module:
            self.hidden = layer._active_adapter
            layer._active_adapter = [a for a in active if a != self.adapter]

    def after_layer(self, layer: LoraLayer, args: tuple, output: Any) -> None:
        """Put the adapter back after a call that module dropout skipped (also when the call raised)."""
        if self.hidden is not None:  # only this adapter comes back: another's module dropout may hold its own out
            current = set(layer.active_adapters)
            layer._active_adapter = [a for a in self.hidden if a == self.adapter or a in current]
            self.hidden = None

    def on_down_output(self, lora_a: torch.nn.Module, args: tuple, lx: torch.Tensor) -> torch.Tensor | None:
        """Neuron and rank dropout on lx = lora_A(x), in training."""
        if not lora_a.training:
            return None
        s = self.settings
        if s.neuron:
            lx = F.dropout(lx, p=s.neuron)
        if s.rank:  # lx is batched: (B, r), (B, tokens, r) or (B, r, H, W)
            batch, rank = lx.size(0), lx.size(self.rank_dim)
            keep = torch.rand((batch, rank), device=lx.device) > s.rank
            shape = [batch] + [1] * (lx.dim() - 1)
            shape[self.rank_dim] = rank
            lx = lx * keep.view(shape) * (1.0 / (1.0 - s.rank))
        return lx

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


def _uses_dora(layer: LoraLayer, adapter: str) -> bool:
    return bool(layer.use_dora.get(adapter, False)) or adapter in getattr(layer, "lora_variant", {})


def install_dropout(module: torch.nn.Module, settings: DropoutSettings, adapter: str = ADAPTER) -> int:
    """Hook the settings' dropouts onto every peft LoRA layer of `module` that holds `adapter`; returns how many
    layers got hooks (none when every dropout is 0 or the layers are LoHa/LoKr)."""
    if not settings.any_on:
        return 0
    count = 0
    for path, layer in module.named_modules():
        if not isinstance(layer, LoraLayer) or adapter not in layer.lora_A:
            continue
        remove_hooks(layer, adapter)
        lora_a = layer.lora_A[adapter]
        state = AdapterDropout(adapter, settings, 1 if isinstance(lora_a, torch.nn.modules.conv._ConvNd) else -1)
        if settings.neuron or settings.rank:
            if _uses_dora(layer, adapter):
                raise LorakitError(f"{path}: DoRA takes no network_dropout on the down projection and no "
                                   "rank_dropout", "set them to 0 (module_dropout works with DoRA)")
            state.handles.append(lora_a.register_forward_hook(state.on_down_output))
        if settings.module:
            state.handles.append(layer.register_forward_pre_hook(state.before_layer))
            state.handles.append(layer.register_forward_hook(state.after_layer, always_call=True))
        layer.__dict__.setdefault(HOOKS, {})[adapter] = state
        count += 1
    return count


def remove_hooks(layer: torch.nn.Module, adapter: str) -> None:
    """Take `adapter`'s dropout hooks off one layer (if it has any)."""
    state = getattr(layer, HOOKS, {}).pop(adapter, None)
    if state is not None:
        state.remove()


def remove_dropout(module: torch.nn.Module, adapter: str) -> None:
    """No dropout of any kind for `adapter` in `module` from now on, in training too (a frozen adapter must give the
    same output at every step): lorakit's hooks, peft's input dropout and peft's LoHa/LoKr rank/module dropout."""
    for layer in module.modules():
        if not isinstance(layer, BaseTunerLayer):
            continue
        remove_hooks(layer, adapter)
        peft_dropout = getattr(layer, "lora_dropout", None)
        if peft_dropout is not None and adapter in peft_dropout:
            peft_dropout[adapter] = torch.nn.Identity()
        for name in ("rank_dropout", "module_dropout"):  # LoHa/LoKr: plain {adapter: p} dicts
            rates = getattr(layer, name, None)
            if isinstance(rates, dict) and adapter in rates:
                rates[adapter] = 0.0
