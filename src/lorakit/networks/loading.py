"""Load a network file (lorakit's, kohya sd-scripts' or LyCORIS's) onto a model through peft.

The file's tensors become a network state (`convert.from_file`), the state says which network type and which peft
options it needs (ranks and alphas per module, DoRA, Tucker convs, LoKr's factor), that network is attached under
an adapter name, and the tensors are copied in. Anything that does not fit is an error listing a count and a few
modules, never a silently partial load.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import LorakitError
from ..families import ModelParts
from ..families.unet_layout import base_layers
from .attach import attach_network, components, write_state
from .convert import from_file, name_map, short_list
from .registry import ADAPTER, ModuleState, NetworkType, Targets, type_of_state


def attach_file(parts: ModelParts, file_sd: dict[str, torch.Tensor], adapter: str = ADAPTER) -> NetworkType:
    """Attach the network a file describes under `adapter` and load its weights; returns the network type."""
    state = from_file(file_sd, name_map(parts))
    if not state:
        raise LorakitError("the file holds no network module")
    kinds = {type_of_state(s).name for s in state.values()}
    if len(kinds) > 1:
        raise LorakitError(f"the file mixes network types ({', '.join(sorted(kinds))}); lorakit loads one per file")
    net = type_of_state(next(iter(state.values())))
    options = _options(net, state)
    if net.name == "lokr":
        options["decompose_factor"] = lokr_factor(parts, state)
    targets: dict[str, Targets] = {}
    for path, tensors in state.items():
        attr, _, module_path = path.partition(".")
        targets.setdefault(attr, {})[module_path] = (net.state_rank(tensors), float(tensors["alpha"]))
    attach_network(parts, None, targets, net=net, adapter=adapter, **options)
    problems = write_state(parts, state, adapter)
    if problems:
        raise LorakitError(f"{len(problems)} of {len(state)} network modules do not fit the model: "
                           + short_list([f"{p} ({msg})" for p, msg in problems]))
    return net


def _options(net: NetworkType, state: dict[str, ModuleState]) -> dict[str, Any]:
    """peft options the file's modules need; one value for all (a peft config has one), except LoKr's
    decompose_both which a module with a full w1 tolerates."""
    values: dict[str, set[Any]] = {}
    for tensors in state.values():
        for key, value in net.module_options(tensors).items():
            values.setdefault(key, set()).add(value)
    mixed = [k for k, v in values.items() if len(v) > 1 and k != "decompose_both"]
    if mixed:
        raise LorakitError(f"the file's modules differ in {', '.join(mixed)}; peft needs one setting per network")
    return {k: any(v) for k, v in values.items()}


def lokr_factor(parts: ModelParts, state: dict[str, ModuleState]) -> int:
    """The LoKr factor that reproduces every module's w1 shape with peft's factorization (LyCORIS's function)."""
    from peft.tuners.lokr.layer import factorization

    layers = {f"{attr}.{p}": m for attr, mod in components(parts) for p, m in base_layers(mod).items()}
    dims = []
    for path, tensors in state.items():
        layer = layers[path]
        out_dim, in_dim = (layer.out_channels, layer.in_channels) if isinstance(layer, torch.nn.Conv2d) \
            else (layer.out_features, layer.in_features)
        a = tensors["lokr_w1"].shape[0] if "lokr_w1" in tensors else tensors["lokr_w1_a"].shape[0]
        c = tensors["lokr_w1"].shape[1] if "lokr_w1" in tensors else tensors["lokr_w1_b"].shape[1]
        dims.append((out_dim, in_dim, a, c))
    candidates = [-1, *sorted({x for _, _, a, c in dims for x in (a, c)})]
    for factor in candidates:
        if all(factorization(o, factor)[0] == a and factorization(i, factor)[0] == c for o, i, a, c in dims):
            return factor
    raise LorakitError("the LoKr file's Kronecker factors match no single factor (LyCORIS 'factor') for all modules")
