"""The network-type registry: one `NetworkType` per module (`lora.py`, `loha.py`, `lokr.py`), all built on peft.

A type says everything lorakit needs to know about one adapter algorithm: its config names (and aliases), the
NetworkSection fields it reads, its peft config factory, the peft layer class whose registered adapter parameters
are the trainable ones, the conversion of ONE module's tensors between peft and the kohya/LyCORIS file layout, and
its `ss_network_module` / `ss_network_args`. Adding an adapter is one module and one `register` call.

Module state (the in-memory side of a conversion) is `{peft parameter name: tensor}` for one adapted module, plus
`"alpha"` (and for LoKr `"rank"`) as 0-dim tensors, e.g. `{"lora_A": …, "lora_B": …, "alpha": tensor(8.)}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..errors import LorakitError

ADAPTER = "lorakit"  # the adapter name lorakit trains under, in every component

Targets = dict[str, tuple[int, float]]  # {module path: (rank, alpha)} of one component
ModuleState = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ModuleSummary:
    """What metadata needs to know about the trained modules of a network (read from them, never from config)."""

    linear: list[tuple[int, float]] = field(default_factory=list)  # (rank, alpha) of Linear / 1×1 conv modules
    conv: list[tuple[int, float]] = field(default_factory=list)  # (rank, alpha) of k×k convolutions
    options: dict[str, Any] = field(default_factory=dict)  # e.g. {"use_dora": True} or {"factor": 4}
    # sd-scripts' per-block network args as strings ({"block_dims": "0,8,…", …}), read from the trained UNet by
    # `targets.kohya_block_args`; empty when every block has the same rank/alpha
    block_args: dict[str, str] = field(default_factory=dict)


def lycoris_rank_alpha(layer: Any, adapter: str) -> tuple[int, float]:
    """(rank, alpha) of a trained peft LyCORIS-family layer (LoHa, LoKr)."""
    return int(layer.r[adapter]), float(layer.alpha[adapter])


@dataclass(frozen=True)
class NetworkType:
    """One adapter algorithm over peft. See the module docstring."""

    name: str  # "lora", "loha", "lokr"
    config_names: tuple[str, ...]  # network.network_module values that select it ("lora", "locon", …)
    layer_class: type  # peft's tuner layer class (LoraLayer, LoHaLayer, LoKrLayer)
    peft_keys: tuple[str, ...]  # peft parameter names one module may hold
    peft_config: Callable[..., Any]  # (net_cfg, targets, **inferred options) -> peft config
    to_file: Callable[[ModuleState], dict[str, torch.Tensor]]  # one module: peft state -> {suffix: tensor}
    from_file: Callable[[dict[str, torch.Tensor]], ModuleState]  # one module: {suffix: tensor} -> peft state
    module_options: Callable[[ModuleState], dict[str, Any]]  # peft config options a module's state needs
    metadata: Callable[[ModuleSummary], dict[str, str]]  # ss_network_module / ss_network_args
    # file key suffixes that identify it ("lora_down.weight", "hada_w1_a", …); empty = its peft keys (LyCORIS)
    file_suffixes: tuple[str, ...] = ()
    # (layer, adapter) -> (rank, alpha) of a trained layer; default: peft's LyCORIS layers (`r`, `alpha`)
    layer_rank_alpha: Callable[[Any, str], tuple[int, float]] = lycoris_rank_alpha
    layer_options: Callable[[Any, Any, str], dict[str, Any]] = lambda layer, config, adapter: {}  # metadata options
    file_rank_alpha: Callable[[Any, str], tuple[int, float]] | None = None  # (rank, alpha) as the file states it
    fit_state: Callable[[ModuleState, int, float], ModuleState] = lambda state, rank, alpha: state  # to a layer
    needs_rank: bool = False  # module states carry "rank" (LoKr: a full-matrix module's rank is not in its shapes)
    rank_key: str = ""  # the state tensor whose first dimension is the rank (when not needs_rank)

    def __post_init__(self) -> None:
        if not self.file_suffixes:
            object.__setattr__(self, "file_suffixes", self.peft_keys)

    def state_rank(self, state: ModuleState) -> int:
        """The rank of one module's state."""
        return int(state["rank"]) if self.needs_rank else int(state[self.rank_key].shape[0])


NETWORKS: dict[str, NetworkType] = {}


def register(network: NetworkType) -> NetworkType:
    """Add a network type to the registry (each type's module calls this once, at import)."""
    NETWORKS[network.name] = network
    return network


def _load_all() -> None:
    """Import the type modules so they register (lazily: the registry has no import cycle with them)."""
    from . import loha, lokr, lora  # noqa: F401


def network_type(config_name: str) -> NetworkType:
    """The type that `network.network_module = config_name` selects (aliases included)."""
    _load_all()
    for net in NETWORKS.values():
        if config_name in net.config_names:
            return net
    raise LorakitError(f"network_module {config_name!r} is not a registered network type",
                       f"use one of {', '.join(n for t in NETWORKS.values() for n in t.config_names)}")


def all_types() -> list[NetworkType]:
    """Every registered network type."""
    _load_all()
    return list(NETWORKS.values())


def type_of_state(state: ModuleState) -> NetworkType:
    """The type a module state belongs to, from its peft parameter names."""
    keys = set(state) - {"alpha", "rank"}
    for net in all_types():
        if keys and keys <= set(net.peft_keys):
            return net
    raise LorakitError(f"adapter parameters {sorted(keys)} belong to no registered network type")


def type_of_file_module(suffixes: set[str]) -> NetworkType | None:
    """The type of one module's tensors in a file, from their key suffixes (None when no type claims them)."""
    for net in all_types():
        if suffixes & set(net.file_suffixes):
            return net
    return None


def type_of_layer(layer: Any, adapter: str = ADAPTER) -> NetworkType | None:
    """The type of a peft tuner layer holding `adapter`, or None."""
    for net in all_types():
        if isinstance(layer, net.layer_class) and any(adapter in getattr(layer, k, {}) for k in net.peft_keys):
            return net
    return None


def take(tensors: dict[str, torch.Tensor], key: str, where: str) -> torch.Tensor:
    """Remove and return `tensors[key]`; a missing key is an error naming the module (conversion consumes every
    key, so what is left afterwards is what no rule used)."""
    if key not in tensors:
        raise LorakitError(f"{where}: {key} is missing (has {', '.join(sorted(tensors)) or 'nothing'})")
    return tensors.pop(key)


def check_consumed(tensors: dict[str, torch.Tensor], where: str) -> None:
    """Every key of a module must have been used by its conversion; a key left over is an error naming it."""
    if tensors:
        raise LorakitError(f"{where}: {', '.join(sorted(tensors))} not converted (no rule for it)",
                           "this file holds a variant lorakit cannot map onto peft yet")


def scalar(value: float) -> torch.Tensor:
    """A 0-dim fp32 tensor (alpha, rank) as module states hold them."""
    return torch.tensor(float(value), dtype=torch.float32)


def pattern_config(targets: Targets) -> tuple[list[str], int, float, dict[str, int], dict[str, float]]:
    """(target_modules, r, alpha, rank_pattern, alpha_pattern) for peft from per-module (rank, alpha).

    peft matches `target_modules` list entries by `key == t or key.endswith('.' + t)` and pattern keys as regexes
    `(.*\\.)?(key)$`; exact module paths (escaped) therefore select exactly the modules asked for (`attach` checks
    the result). The most common rank/alpha become the defaults, so the patterns list only the exceptions.
    """
    import re
    from collections import Counter

    if not targets:
        raise LorakitError("no module selected for the network")
    r = Counter(v[0] for v in targets.values()).most_common(1)[0][0]
    alpha = Counter(v[1] for v in targets.values()).most_common(1)[0][0]
    ranks = {re.escape(p): v[0] for p, v in targets.items() if v[0] != r}
    alphas = {re.escape(p): v[1] for p, v in targets.items() if v[1] != alpha}
    return sorted(targets), r, alpha, ranks, alphas
