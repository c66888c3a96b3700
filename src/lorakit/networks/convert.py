"""Pure conversion between the in-memory network state and a kohya/LyCORIS file's tensors.

`to_file(state, name_map)` and `from_file(file_sd, name_map)` are functions of dicts only: `state` is
`{"<component>.<module path>": module state}` (see `registry`), `name_map` is `{"<component>.<module path>": kohya
name}` as the family names modules (`name_map(parts)` builds it). Every key is consumed in both directions; a key
or module left over is an error naming it. The network type of each module follows from its keys (registry).
"""

from __future__ import annotations

import torch

from ..errors import LorakitError
from ..families import ModelParts
from ..families.unet_layout import base_layers
from .attach import components
from .registry import ModuleState, type_of_file_module, type_of_state


def short_list(items: list[str], shown: int = 3) -> str:
    """'a, b, c' or 'a, b, c and 17 more': an error names a few examples, never hundreds."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")


def to_file(state: dict[str, ModuleState], name_map: dict[str, str]) -> dict[str, torch.Tensor]:
    """The file's tensors (`<kohya name>.<suffix>`) of a network state."""
    unnamed = sorted(p for p in state if p not in name_map)
    if unnamed:
        raise LorakitError(f"{len(unnamed)} adapted module(s) have no kohya name: {short_list(unnamed)}",
                           "this is a lorakit bug in the family's name map; please report it")
    out: dict[str, torch.Tensor] = {}
    for path, tensors in state.items():
        net = type_of_state(tensors)
        for suffix, tensor in net.to_file(tensors).items():
            out[f"{name_map[path]}.{suffix}"] = tensor
    return out


def group_file(file_sd: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{module name: {suffix: tensor}}: a kohya key is `<name>.<suffix>`, the name has no dots."""
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in file_sd.items():
        name, dot, suffix = key.partition(".")
        if not dot:
            raise LorakitError(f"file key {key!r} is not <module>.<tensor>")
        modules.setdefault(name, {})[suffix] = tensor
    return modules


def from_file(file_sd: dict[str, torch.Tensor], name_map: dict[str, str]) -> dict[str, ModuleState]:
    """The network state of a file's tensors. Modules the model does not have, or whose keys no network type
    claims, are an error listing a count and a few names."""
    path_of = {name: path for path, name in name_map.items()}
    state, unknown, unclaimed = {}, [], []
    for name, tensors in group_file(file_sd).items():
        net = type_of_file_module(set(tensors))
        if net is None:
            unclaimed.append(f"{name} ({', '.join(sorted(tensors))})")
        elif name not in path_of:
            unknown.append(name)
        else:
            state[path_of[name]] = net.from_file(tensors)
    if unclaimed:
        raise LorakitError(f"{len(unclaimed)} module(s) in a layout lorakit cannot load: {short_list(unclaimed)}",
                           "lorakit loads LoRA/LoCon (lora_down/lora_up), DoRA (dora_scale), LoHa (hada_*) and "
                           "LoKr (lokr_*)")
    if unknown:
        raise LorakitError(f"{len(unknown)} module(s) match no layer of the model: {short_list(sorted(unknown))}",
                           "use a LoRA trained on this model's family and architecture")
    return state


def name_map(parts: ModelParts) -> dict[str, str]:
    """{"<component>.<module path>": kohya name} for every Linear/Conv2d of the UNet and text encoders that the
    family names (every Linear and Conv2d)."""
    fam, out = parts.family, {}
    for index, (attr, module) in enumerate(components(parts)):
        layers = base_layers(module)
        if attr == "unet":
            names = _unet_names(parts, layers)
        else:
            names = {p: fam.kohya_te_name(index - 1, p) for p in layers}
        out.update({f"{attr}.{p}": n for p, n in names.items()})
    return out


def _unet_names(parts: ModelParts, layers: dict[str, torch.nn.Module]) -> dict[str, str]:
    """The family's kohya names of the UNet's layers (every family names every Linear/Conv2d)."""
    return {p: n for p, n in parts.family.kohya_unet_names(parts.unet).items() if p in layers}
